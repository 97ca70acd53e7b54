/**
 * Pure cgroup/mountinfo parsing against every stated expectation of the public corpus items copied into
 * test/fixtures/cgroup (expectations are read from the `asserts` field of each `.source.json` sidecar).
 */
import fc from 'fast-check';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { GrpcCode, MalformedInput, PreconditionFailed } from '../../src/errors.js';
import { WorkloadErrorCode } from '../../src/workload/errors.js';
import {
  CgroupMatchers,
  ContainerId,
  PodUid,
  locateContainer,
  locateFromCgroupPaths,
  parseCgroupFile,
  parseCgroupPath,
  parseKubeletCgroupPath,
  parseMountinfo,
  podmanSocketFor,
} from '../../src/workload/cgroup.js';
import { Procfs } from '../../src/workload/procfs.js';
import { FIXTURES, thrown } from './helpers.js';

const CG = join(FIXTURES, 'cgroup');
const sidecar = (id: string): { asserts: any } => JSON.parse(readFileSync(join(CG, `${id}.source.json`), 'utf8'));
const text = (rel: string): string => readFileSync(join(CG, rel), 'utf8');

describe('value types', () => {
  it('PodUid normalises underscores and case, rejects other shapes', () => {
    expect(PodUid.parse('2C48913C_B29F_11E7_9350_020968147796').toString()).toBe('2c48913c-b29f-11e7-9350-020968147796');
    expect(PodUid.parse('2c48913c-b29f-11e7-9350-020968147796').equals(PodUid.parse('2c48913c_b29f_11e7_9350_020968147796'))).toBe(true);
    for (const bad of ['', '2732ca68f6358eba7703fb6f82a25c94', '2c48913c-b29f-11e7-9350-02096814779', 'zc48913c-b29f-11e7-9350-020968147796']) {
      const e = thrown(() => PodUid.parse(bad));
      expect(e).toBeInstanceOf(MalformedInput);
      expect(e.code).toBe('ERR_WORKLOAD_POD_UID_INVALID');
      expect(e.grpcCode).toBe(GrpcCode.INVALID_ARGUMENT);
    }
  });
  it('ContainerId accepts 64 hex (and the ECS task form) only', () => {
    const id = '9bca8d63d5fa610783847915bcff0ecac1273e5b4bed3f6fa1b07350e0135961';
    expect(ContainerId.parse(id.toUpperCase()).toString()).toBe(id);
    expect(ContainerId.parse(id).equals(ContainerId.parse(id))).toBe(true);
    expect(thrown(() => ContainerId.parse(id.slice(1))).code).toBe('ERR_WORKLOAD_CONTAINER_ID_INVALID');
  });
  it('a structural look-alike is not a PodUid (#private field)', () => {
    const fake = { toString: () => 'x', equals: () => true } as unknown as PodUid;
    expect(PodUid.parse('2c48913c-b29f-11e7-9350-020968147796').equals(fake)).toBe(false);
  });
});

describe('corpus: spire-cgroups-parse (cgroups_test.go)', () => {
  const a = sidecar('spire-cgroups-parse').asserts;
  for (const name of ['simple.cgroup', 'unified.cgroup']) {
    it(name, () => {
      const got = parseCgroupFile(text(`spire-cgroups-parse/${name}`)).map((e) => ({ hierarchy_id: e.hierarchyId, controllers: e.controllers, group_path: e.groupPath }));
      expect(got).toEqual(a[name].entries);
    });
  }
  it('bad-format.cgroup is MalformedInput', () => {
    expect(a['bad-format.cgroup'].error).toMatch(/2 colon separated fields/);
    const e = thrown(() => parseCgroupFile(text('spire-cgroups-parse/bad-format.cgroup')));
    expect(e).toBeInstanceOf(MalformedInput);
    expect(e.code).toBe('ERR_WORKLOAD_CGROUP_MALFORMED');
  });
  it('keeps colons inside the path (containerd colon form)', () => {
    expect(parseCgroupFile('0::/a.slice:cri-containerd:abc\n')[0]!.groupPath).toBe('/a.slice:cri-containerd:abc');
  });
});

describe('corpus: spire-cgroup-path-cases', () => {
  const data = JSON.parse(text('spire-cgroup-path-cases.json'));
  const a = sidecar('spire-cgroup-path-cases').asserts;
  it('has the stated number of cases', () => {
    expect(data.single_path_cases).toHaveLength(a.single_path_case_count);
    expect(data.multi_line_cases).toHaveLength(a.multi_line_case_count);
  });
  for (const c of data.single_path_cases) {
    it(`single path (legacy k8s semantics): ${c.name}`, () => {
      const r = parseKubeletCgroupPath(c.cgroup_path);
      expect(r !== undefined).toBe(c.found);
      expect(r?.containerId.toString() ?? '').toBe(c.container_id);
      expect(r?.podUid?.toString() ?? '').toBe(c.pod_uid);
    });
  }
  for (const c of data.multi_line_cases) {
    it(`multi line: ${c.name}`, () => {
      if (c.grpc_code === 'OK') {
        // the cri-o case is given as a whole `0::/path` line; paths otherwise
        const paths = c.cgroup_paths.map((p: string) => p.replace(/^\d+:[^:/]*:/, ''));
        const r = locateFromCgroupPaths(paths);
        expect(r?.containerId.toString() ?? '').toBe(c.container_id);
        expect(r?.podUid?.toString() ?? '').toBe(c.pod_uid);
      } else {
        expect(c.grpc_code).toBe('FailedPrecondition');
        const e = thrown(() => locateFromCgroupPaths(c.cgroup_paths));
        expect(e).toBeInstanceOf(PreconditionFailed);
        expect(e.grpcCode).toBe(GrpcCode.FAILED_PRECONDITION);
        expect(e.code).toBe(c.error.startsWith('multiple pod UIDs') ? 'ERR_WORKLOAD_MULTIPLE_POD_UIDS' : 'ERR_WORKLOAD_MULTIPLE_CONTAINER_IDS');
      }
    });
  }
  it('the default locator takes the runtime from the path', () => {
    expect(parseCgroupPath('/kubepods-besteffort-pod72f7f152_440c_66ac_9084_e0fc1d8a910c.slice:cri-containerd:b2a102854b4969b2ce98dc329c86b4fb2b06e4ad2cc8da9d8a7578c9cd2004a2')?.runtime).toBe('containerd');
    expect(parseCgroupPath('/../crio-45490e76e0878aaa4d9808f7d2eefba37f093c3efbba9838b6d8ab804d9bd814.scope')?.runtime).toBe('crio');
  });
});

describe('corpus: pid cgroup files (k8s_posix_test.go)', () => {
  for (const id of ['spire-cgroups_pid_in_pod', 'spire-cgroups_pid_in_kind_pod', 'spire-cgroups_init_pid_in_pod', 'spire-cgroups_pid_not_in_pod', 'spire-systemd_cgroups_pid_in_pod']) {
    it(id, () => {
      const a = sidecar(id).asserts;
      const r = locateContainer({ cgroup: text(`${id}.txt`) });
      expect(r !== undefined).toBe(a.in_pod);
      expect(r?.podUid?.toString() ?? null).toBe(a.pod_uid);
      expect(r?.containerId.toString() ?? null).toBe(a.container_id);
    });
  }
});

describe('corpus: spire-docker-cgroup-cases (docker_posix_test.go)', () => {
  const cases = JSON.parse(text('spire-docker-cgroup-cases.json'));
  for (const c of cases) {
    it(c.desc, () => {
      const opts = Array.isArray(c.matcher) ? { matchers: CgroupMatchers.parse(c.matcher) } : {};
      const run = () => locateContainer({ cgroup: c.cgroup }, opts);
      if (c.error_contains) {
        const e = thrown(run);
        expect(e).toBeInstanceOf(PreconditionFailed);
        expect(e.code).toBe(c.error_contains.startsWith('multiple') ? 'ERR_WORKLOAD_MULTIPLE_CONTAINER_IDS' : 'ERR_WORKLOAD_MATCHER_EMPTY_ID');
        return;
      }
      const r = run();
      expect(r?.containerId.toString() ?? null).toBe(c.container_id);
      if (c.podman_socket) {
        expect(r?.runtime).toBe('podman');
        const sock = podmanSocketFor(r!.path, 'unix:///run/podman/podman.sock', 'unix:///run/user/%d/podman/podman.sock');
        expect(sock).toBe(c.podman_socket === 'default rootful podman socket' ? 'unix:///run/podman/podman.sock' : c.podman_socket);
      }
    });
  }
});

describe('corpus: elastic-container-metadata-public', () => {
  const data = JSON.parse(text('elastic-container-metadata-public.json'));
  const a = sidecar('elastic-container-metadata-public').asserts;
  for (const [name, want] of Object.entries<any>(a.cases)) {
    it(name, () => {
      const r = locateContainer({ cgroup: data[name].files['/proc/self/cgroup'].join('\n') });
      expect(r?.containerId.toString() ?? null).toBe(want.containerId);
      expect(r?.podUid?.toString() ?? null).toBe(want.podId);
    });
  }
});

describe('corpus: spire-containerinfo-* (extract_test.go) through Procfs over the fixture tree', () => {
  const ids = [
    'spire-containerinfo-docker-cgroup-mount-at-slash-v1',
    'spire-containerinfo-docker-cgroup-mount-at-slash-v2',
    'spire-containerinfo-docker-no-cgroup-mount',
    'spire-containerinfo-docker-v1',
    'spire-containerinfo-docker-v2',
    'spire-containerinfo-k8s-no-cgroup-mount',
    'spire-containerinfo-k8s-pod-uid-override',
    'spire-containerinfo-k8s-v1',
    'spire-containerinfo-other-cgroup-primary',
    'spire-containerinfo-other-malformed',
    'spire-containerinfo-other-mountinfo-fallback',
  ];
  for (const id of ids) {
    it(id, () => {
      const a = sidecar(id).asserts;
      const proc = new Procfs(join(CG, id, 'proc'));
      // SPIRE's semantics have the mountinfo fallback on; here it must be asked for (mountinfo_fallback = true).
      const locate = () => locateContainer({ cgroup: proc.cgroup(a.pid), mountinfo: () => proc.mountinfo(a.pid) }, { mountinfoFallback: true });
      if (id === 'spire-containerinfo-k8s-pod-uid-override') {
        // SPIRE ignores the pod-less line with another container ID; we fail closed (F10): it could be either.
        expect(locate).toThrow(expect.objectContaining({ code: WorkloadErrorCode.MULTIPLE_CONTAINER_IDS, grpcCode: GrpcCode.FAILED_PRECONDITION }));
        return;
      }
      const r = locate();
      expect(r?.containerId.toString() ?? '').toBe(a.container_id);
      if (a.api === 'GetPodUIDAndContainerID') expect(r?.podUid?.toString() ?? '').toBe(a.pod_uid);
    });
  }
});

describe('mountinfo guard (SPIRE #7060)', () => {
  const forged =
    '2033 2032 0:33 /kubepods/besteffort/pod00000000-1111-2222-3333-444444444444/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef /sys/fs/cgroup ro - cgroup2 cgroup rw\n';
  it('a process with a concrete non-container cgroup never has its mountinfo read', () => {
    let read = false;
    const r = locateContainer({ cgroup: '0::/user.slice/user-1000.slice/session-2.scope\n', mountinfo: () => ((read = true), forged) });
    expect(r).toBeUndefined();
    expect(read).toBe(false);
  });
  it('a forged mountinfo cannot override the cgroup answer', () => {
    const real = 'fedcba98765432100123456789abcdef0123456789abcdef0123456789abcdef';
    const r = locateContainer({ cgroup: `0::/system.slice/docker-${real}.scope\n`, mountinfo: () => forged });
    expect(r?.containerId.toString()).toBe(real);
    expect(r?.via).toBe('cgroup');
  });
  it('the fallback is off unless mountinfo_fallback = true', () => {
    expect(locateContainer({ cgroup: '0::/\n', mountinfo: () => forged }, { mountinfoFallback: false })).toBeUndefined();
    expect(locateContainer({ cgroup: '0::/\n', mountinfo: () => forged })).toBeUndefined();
    expect(locateContainer({ cgroup: '0::/\n', mountinfo: () => forged }, { mountinfoFallback: true })?.via).toBe('mountinfo');
  });
  it('mountinfo escapes are decoded', () => {
    expect(parseMountinfo('1 2 0:3 /a\\040b /sys/fs/cgroup rw - cgroup2 cgroup rw\n')[0]!.root).toBe('/a b');
  });
});

describe('more path forms', () => {
  const id = 'b2a102854b4969b2ce98dc329c86b4fb2b06e4ad2cc8da9d8a7578c9cd2004a2';
  it('containerd systemd scope form', () => {
    const r = parseCgroupPath(`/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod72f7f152_440c_66ac_9084_e0fc1d8a910c.slice/cri-containerd-${id}.scope`);
    expect(r?.runtime).toBe('containerd');
    expect(r?.podUid?.toString()).toBe('72f7f152-440c-66ac-9084-e0fc1d8a910c');
  });
  it('crio-conmon scopes neither identify nor conflict (SPIRE #4088)', () => {
    expect(parseCgroupPath(`/kubepods.slice/crio-conmon-${id}.scope`)).toBeUndefined();
    const other = '030ded69d4c98fcf69c988f75a5eb3a1b4357e1432bd5510c936a40d7e9a1198';
    const r = locateContainer({ cgroup: `1:name=systemd:/machine.slice/crio-conmon-${other}.scope\n0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod561fd272_d131_47ef_a01b_46a997a778f3.slice/crio-${id}.scope\n` });
    expect(r?.containerId.toString()).toBe(id);
  });
  it('a pod-level cgroup (no container segment) is not a container', () => {
    expect(locateContainer({ cgroup: '0::/kubepods.slice/kubepods-pod72f7f152_440c_66ac_9084_e0fc1d8a910c.slice\n' })).toBeUndefined();
  });
});

describe('properties', () => {
  it('any cgroup text parses, throws MalformedInput or PreconditionFailed, nothing else', () => {
    const seg = fc.oneof(
      fc.constantFrom('kubepods', 'burstable', 'docker-' + 'a'.repeat(64) + '.scope', 'pod2c48913c-b29f-11e7-9350-020968147796', 'b'.repeat(64), 'x:y', '..'),
      fc.string({ maxLength: 8 }),
    );
    const line = fc.tuple(fc.string({ maxLength: 3 }), fc.array(seg, { maxLength: 6 })).map(([h, s]) => `${h}::/${s.join('/')}`);
    fc.assert(
      fc.property(fc.array(fc.oneof(line, fc.string({ maxLength: 40 })), { maxLength: 5 }), (lines) => {
        try {
          locateContainer({ cgroup: lines.join('\n'), mountinfo: () => lines.join('\n') });
        } catch (e) {
          expect(e instanceof MalformedInput || e instanceof PreconditionFailed).toBe(true);
        }
      }),
      { numRuns: 500 },
    );
  });
});
