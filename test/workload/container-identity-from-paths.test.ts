/**
 * Which container (and pod) a cgroup path or mount root names: the identity every workload selector hangs on.
 * Properties:
 *  - an ID or a pod UID counts only as a whole token: a longer hex run, or one glued to a name, is not one;
 *  - the runtime selector comes from what the path names, never from a guess;
 *  - the runtime's monitor scopes (conmon) never identify a workload;
 *  - a malformed file is MalformedInput naming the line, never a silent "not a container";
 *  - mount roots count only for cgroup filesystems, and the fallback runs only when the cgroup file says nothing;
 *  - configured matchers match whole paths, one segment per `*`, and refuse a match with no ID;
 *  - a rootless podman socket is chosen only from a whole `user-<uid>.slice` segment with a 32-bit UID.
 */
import { describe, expect, it } from 'vitest';
import { GrpcCode, MalformedInput, PreconditionFailed } from '../../src/errors.js';
import {
  CgroupMatchers,
  ContainerId,
  PodUid,
  locateContainer,
  locateFromCgroupPaths,
  locateFromMountinfo,
  mergeMatches,
  parseCgroupFile,
  parseCgroupPath,
  parseKubeletCgroupPath,
  parseMountinfo,
  podmanSocketFor,
} from '../../src/workload/cgroup.js';
import { WorkloadErrorCode } from '../../src/workload/errors.js';
import { thrown } from './helpers.js';

const ID = '9bca8d63d5fa610783847915bcff0ecac1273e5b4bed3f6fa1b07350e0135961';
const ID2 = '030ded69d4c98fcf69c988f75a5eb3a1b4357e1432bd5510c936a40d7e9a1198';
const UID = '2c48913c-b29f-11e7-9350-020968147796';
const UID_ = UID.replaceAll('-', '_');
const idOf = (path: string) => parseCgroupPath(path)?.containerId.toString();

describe('an ID or a pod UID counts only as a whole token', () => {
  it('a 64-hex token is a container ID; 63 or 65 hex digits, or hex glued to a name, is not', () => {
    expect(idOf(`/kubepods/besteffort/pod${UID}/${ID}`)).toBe(ID);
    expect(idOf(`/system.slice/docker-${ID.toUpperCase()}.scope`)).toBe(ID);
    expect(idOf(`/kubepods/besteffort/pod${UID}/${ID}a`)).toBeUndefined();
    expect(idOf(`/kubepods/besteffort/pod${UID}/a${ID}`)).toBeUndefined();
    expect(idOf(`/kubepods/besteffort/pod${UID}/${ID.slice(1)}`)).toBeUndefined();
    expect(idOf(`/kubepods/besteffort/pod${UID}/x_${ID}`)).toBeUndefined();
    expect(idOf(`/kubepods/besteffort/pod${UID}/${ID}_x`)).toBeUndefined();
    expect(idOf(`/kubepods/besteffort/pod${UID}/${'g'.repeat(64)}`)).toBeUndefined();
  });
  it('a pod UID counts only as `pod<uid>` at the start of a token', () => {
    expect(parseCgroupPath(`/kubepods/besteffort/pod${UID}/${ID}`)?.podUid?.toString()).toBe(UID);
    expect(parseCgroupPath(`/kubepods.slice/kubepods-besteffort-pod${UID_}.slice/cri-containerd-${ID}.scope`)?.podUid?.toString()).toBe(UID);
    expect(parseCgroupPath(`/kubepods/besteffort/xpod${UID}/${ID}`)?.podUid).toBeUndefined();
    expect(parseCgroupPath(`/kubepods/besteffort/pod${UID}0/${ID}`)?.podUid).toBeUndefined();
    expect(parseCgroupPath(`/kubepods/besteffort/pod${UID.toUpperCase()}/${ID}`)?.podUid?.toString()).toBe(UID);
  });
  it('the value types refuse anything else, including non-strings, and compare by value', () => {
    // An object that prints as a valid value is still not one (the parsers never coerce).
    for (const bad of [123, undefined, { toString: () => UID }, `${UID}x`, `x${UID}`]) {
      const e = thrown(() => PodUid.parse(bad as string));
      expect(e).toBeInstanceOf(MalformedInput);
      expect([e.code, e.message, e.fields.rule]).toEqual([WorkloadErrorCode.POD_UID_INVALID, 'pod UID must be 8-4-4-4-12 hex digits', 'pod-uid-format']);
    }
    for (const bad of [123, undefined, { toString: () => ID }, `${ID}0`, `0${ID}`, `${'a'.repeat(32)}-`, `x${'a'.repeat(32)}-1`, `${'a'.repeat(32)}-12345678901`]) {
      const e = thrown(() => ContainerId.parse(bad as string));
      expect(e).toBeInstanceOf(MalformedInput);
      expect([e.code, e.message, e.fields.rule]).toEqual([WorkloadErrorCode.CONTAINER_ID_INVALID, 'container ID must be 64 hex digits', 'container-id-format']);
    }
    expect(ContainerId.parse(`${'A'.repeat(32)}-7`).toString()).toBe(`${'a'.repeat(32)}-7`);
    expect(ContainerId.parse(ID).equals(ContainerId.parse(ID2))).toBe(false);
    expect(PodUid.parse(UID).equals(PodUid.parse('00000000-1111-2222-3333-444444444444'))).toBe(false);
    expect(ContainerId.parse(ID).equals({ toString: () => ID } as unknown as ContainerId)).toBe(false);
  });
});

describe('the runtime comes from what the path names', () => {
  it.each([
    [`/system.slice/cri-containerd-${ID}.scope`, 'containerd'],
    [`/system.slice/containerd-${ID}.scope`, 'containerd'],
    [`/kubepods.slice/crio-${ID}.scope`, 'crio'],
    [`/system.slice/docker-${ID}.scope`, 'docker'],
    [`/machine.slice/libpod-${ID}.scope`, 'podman'],
    [`/docker/${ID}`, 'docker'],
    [`/libpod/${ID}`, 'podman'],
    [`/crio/${ID}`, 'crio'],
    [`/cri-o/${ID}`, 'crio'],
    [`/containerd/${ID}`, 'containerd'],
    [`/cri-containerd/${ID}`, 'containerd'],
    [`/kubepods.slice/kubepods-pod${UID_}.slice:cri-containerd:${ID}`, 'containerd'],
  ])('%s → %s', (path, runtime) => {
    const r = parseCgroupPath(path);
    expect(r?.containerId.toString()).toBe(ID);
    expect(r?.runtime).toBe(runtime);
  });
  it('a path that names no runtime right before the ID gets none', () => {
    for (const path of [`/kubepods/besteffort/pod${UID}/${ID}`, `/system.slice/other-${ID}.scope`, `/system.slice/docker-old-${ID}.scope`, `/${ID}`, `/somewhere/${ID}`]) {
      const r = parseCgroupPath(path);
      expect(r?.containerId.toString(), path).toBe(ID);
      expect(r && 'runtime' in r, path).toBe(false);
    }
  });
  it("the runtime's monitor scopes never identify a workload", () => {
    expect(parseCgroupPath(`/machine.slice/libpod-conmon-${ID}.scope`)).toBeUndefined();
    expect(parseCgroupPath(`/kubepods.slice/crio-conmon-${ID}.scope`)).toBeUndefined();
    // … and do not conflict with the workload's line
    const r = locateFromCgroupPaths([`/machine.slice/libpod-conmon-${ID2}.scope`, `/machine.slice/libpod-${ID}.scope`]);
    expect([r?.containerId.toString(), r?.runtime]).toEqual([ID, 'podman']);
  });
  it('the same ID twice (Docker Desktop), in any case, is one container', () => {
    const r = parseCgroupPath(`/docker/${ID.toUpperCase()}/docker/${ID}`);
    expect([r?.containerId.toString(), r?.outerContainerId]).toEqual([ID, undefined]);
  });
  it('an ECS task container ID counts only under /ecs/<task>/<task>-<n>', () => {
    const task = 'a'.repeat(24) + '0123abcd';
    expect(idOf(`/ecs/${task}/${task}-1234`)).toBe(`${task}-1234`);
    expect(idOf(`/ecs/${task}/${'b'.repeat(32)}-1234`)).toBeUndefined();
    expect(idOf(`/other/${task}/${task}-1234`)).toBeUndefined();
    expect(idOf(`/ecs/${task.slice(1)}/${task.slice(1)}-1234`)).toBeUndefined();
    expect(idOf(`/${task}-1234`)).toBeUndefined();
    expect(idOf(`/ecs/${task}/${task}-x`)).toBeUndefined();
  });
});

describe('nesting shapes around monitor scopes and kind', () => {
  const nested = (path: string, message: RegExp) => {
    const e = thrown(() => parseCgroupPath(path));
    expect(e).toBeInstanceOf(PreconditionFailed);
    expect(e.code).toBe(WorkloadErrorCode.NESTED_CGROUP);
    expect(e.message).toMatch(message);
  };
  it('a container below a monitor scope is not kind: refused', () => {
    nested(`/machine.slice/libpod-conmon-${ID}.scope/${ID2}`, /has 2 container segments outside the kind node-container shape/);
    nested(`/crio-conmon-${ID}.scope/kubepods/besteffort/pod${UID}/${ID2}`, /outside the kind node-container shape/);
  });
  it('a monitor scope below a container identifies nothing: the process is the runtime monitor', () => {
    expect(parseCgroupPath(`/system.slice/docker-${ID}.scope/crio-conmon-${ID2}.scope`)).toBeUndefined();
  });
  it('two monitor scopes identify nothing (and do not crash)', () => {
    expect(parseCgroupPath(`/crio-conmon-${ID}.scope/crio-conmon-${ID2}.scope`)).toBeUndefined();
    expect(parseCgroupPath(`/crio-conmon-${ID}.scope/crio-conmon-${ID}.scope`)).toBeUndefined();
  });
  it('kind needs a kubepods segment between the node container and the pod, as a whole word', () => {
    expect(parseCgroupPath(`/docker/${ID2}/kubepods/pod${UID}/${ID}`)?.outerContainerId?.toString()).toBe(ID2);
    expect(parseCgroupPath(`/docker/${ID2}/kubelet-kubepods.slice/kubepods-pod${UID_}.slice/cri-containerd-${ID}.scope`)?.outerContainerId?.toString()).toBe(ID2);
    nested(`/docker/${ID2}/xkubepods/pod${UID}/${ID}`, /outside the kind node-container shape/);
    nested(`/docker/${ID2}/kubepodsx/pod${UID}/${ID}`, /outside the kind node-container shape/);
    nested(`/docker/${ID2}/pod${UID}/kubepods/${ID}`, /outside the kind node-container shape/);
  });
  it('the kubepods tree must lie between the node container and the pod, not above the node container', () => {
    nested(`/kubepods/${ID2}/pod${UID}/${ID}`, /outside the kind node-container shape/);
    nested(`/kubepods/docker/${ID2}/pod${UID}/${ID}`, /outside the kind node-container shape/);
  });
  it('a pod UID and a container ID in one segment: the pod is not above the container, refused', () => {
    nested(`/kubepods/pod${UID}-${ID}`, /has a pod segment below its container/);
    nested(`/docker/${ID2}/kubepods/pod${UID}-${ID}`, /has a pod segment below its container/);
  });
  it('the refusal quotes at most 512 characters of the path and names the rule', () => {
    const long = `/${'x'.repeat(600)}/kubepods/pod${UID}/pod${UID}/${ID}`;
    const e = thrown(() => parseCgroupPath(long));
    expect(e.message).toBe(`cgroup path ${JSON.stringify(long.slice(0, 512))} has 2 pod segments: a nested cgroup cannot be told from an impersonation`);
    expect(e.fields).toEqual({ rule: 'single-pod-and-container-segment' });
  });
  it('the refusal says which shape was wrong', () => {
    nested(`/docker/${ID2}/kubepods/${ID}/pod${UID}`, /has 2 container segments outside the kind node-container shape/);
    nested(`/kubepods/${ID}/pod${UID}`, /has a pod segment below its container/);
    nested(`/kubepods/pod${UID}/pod${UID}/${ID}`, /has 2 pod segments/);
  });
  it('an ECS ID in a relative path (as the kubelet locator may get one) is found', () => {
    const task = 'c'.repeat(32);
    expect(idOf(`ecs/${task}/${task}-9`)).toBe(`${task}-9`);
  });
});

describe('the kubelet locator (SPIRE k8s semantics)', () => {
  it('needs a pod UID, except CRI-O; takes a whole N:controllers:path line', () => {
    expect(parseKubeletCgroupPath(`11:pids:/kubepods/besteffort/pod${UID}/${ID}`)?.podUid?.toString()).toBe(UID);
    expect(parseKubeletCgroupPath(`0::/kubepods/besteffort/pod${UID}/${ID}`)?.containerId.toString()).toBe(ID);
    expect(parseKubeletCgroupPath(`/system.slice/docker-${ID}.scope`)).toBeUndefined();
    expect(parseKubeletCgroupPath(`/kubepods.slice/crio-${ID}.scope`)?.containerId.toString()).toBe(ID);
    expect(parseKubeletCgroupPath(`/system.slice/other.service`)).toBeUndefined();
  });
});

describe('a malformed cgroup file is refused, naming the line', () => {
  it('a line with fewer than three fields', () => {
    for (const [text, line] of [
      ['0::/\nnot-a-line\n', 2],
      ['0:pids\n', 1],
      ['\n\n12:pids:/\nx\n', 4],
    ] as const) {
      const e = thrown(() => parseCgroupFile(text));
      expect(e).toBeInstanceOf(MalformedInput);
      expect(e.code).toBe(WorkloadErrorCode.CGROUP_MALFORMED);
      expect(e.message).toBe(`invalid cgroup entry on line ${line}: expected hierarchy-ID:controller-list:path`);
      expect(e.fields).toEqual({ line, rule: 'three-colon-fields' });
    }
  });
  it('fields are split on the first two colons; blank lines and surrounding space are skipped', () => {
    expect(parseCgroupFile(':cpu:/x')).toEqual([{ hierarchyId: '', controllers: 'cpu', groupPath: '/x' }]);
    expect(parseCgroupFile('  12:pids,cpu:/a:b:c  \n\n0::/\n')).toEqual([
      { hierarchyId: '12', controllers: 'pids,cpu', groupPath: '/a:b:c' },
      { hierarchyId: '0', controllers: '', groupPath: '/' },
    ]);
  });
});

describe('merging lines', () => {
  const pod = { containerId: ContainerId.parse(ID), podUid: PodUid.parse(UID) };
  it('a pod-less line never overrides the pod line, and must name the same container', () => {
    const podless = { containerId: ContainerId.parse(ID), runtime: 'docker' as const };
    expect(mergeMatches([pod, podless])).toBe(pod);
    expect(mergeMatches([podless, pod])).toBe(pod);
    const other = { containerId: ContainerId.parse(ID2) };
    for (const order of [
      [pod, other],
      [other, pod],
    ]) {
      const e = thrown(() => mergeMatches(order));
      expect(e.code).toBe(WorkloadErrorCode.MULTIPLE_CONTAINER_IDS);
      expect(e.fields).toMatchObject({ rule: 'single-container-id', first: ID, second: ID2 });
    }
  });
  it('two pod-less lines naming different containers are refused; the same one merges, keeping a named runtime', () => {
    const a = { containerId: ContainerId.parse(ID) };
    const e = thrown(() => mergeMatches([a, { containerId: ContainerId.parse(ID2) }]));
    expect(e).toBeInstanceOf(PreconditionFailed);
    expect(e.message).toBe(`multiple container IDs found in cgroups (${ID}, ${ID2})`);
    expect(e.fields).toEqual({ rule: 'single-container-id', first: ID, second: ID2 });
    const named = { containerId: ContainerId.parse(ID), runtime: 'crio' as const };
    expect(mergeMatches([a, named])).toBe(named);
    expect(mergeMatches([named, { containerId: ContainerId.parse(ID), runtime: 'docker' as const }])).toBe(named);
    expect(mergeMatches([])).toBeUndefined();
  });
  it('two pod lines naming the same pod but different containers are refused', () => {
    const e = thrown(() => mergeMatches([pod, { ...pod, containerId: ContainerId.parse(ID2) }]));
    expect(e.code).toBe(WorkloadErrorCode.MULTIPLE_CONTAINER_IDS);
  });
  it("kind: a pod-less line may name the pod line's node container, but no third container", () => {
    const kind = parseCgroupPath(`/docker/${ID2}/kubepods/pod${UID}/${ID}`)!;
    expect(mergeMatches([kind, { containerId: ContainerId.parse(ID2) }])).toBe(kind);
    const third = 'f'.repeat(64);
    const e = thrown(() => mergeMatches([kind, { containerId: ContainerId.parse(third) }]));
    expect(e.code).toBe(WorkloadErrorCode.MULTIPLE_CONTAINER_IDS);
    expect(e.message).toBe(`multiple container IDs found in cgroups (${ID} in pod ${UID}, ${third} without a pod)`);
  });
  it('two pod UIDs are refused, naming both', () => {
    const other = '00000000-1111-2222-3333-444444444444';
    const e = thrown(() => mergeMatches([pod, { containerId: ContainerId.parse(ID), podUid: PodUid.parse(other) }]));
    expect(e.code).toBe(WorkloadErrorCode.MULTIPLE_POD_UIDS);
    expect(e.message).toBe(`multiple pod UIDs found in cgroups (${UID}, ${other})`);
    expect(e.fields).toMatchObject({ rule: 'single-pod-uid', first: UID, second: other });
  });
});

describe('mount roots (the guarded mountinfo fallback)', () => {
  const line = (root: string, fs = 'cgroup2', opt = '') => `30 25 0:26 ${root} /sys/fs/cgroup rw,nosuid${opt} - ${fs} cgroup rw`;
  it('parses the fields around optional fields; refuses lines without a separator or fstype, naming the line', () => {
    expect(parseMountinfo(`${line('/a', 'cgroup', ' shared:4 master:1')}\n\n${line('/b\\011c')}\n`)).toEqual([
      { root: '/a', mountPoint: '/sys/fs/cgroup', fsType: 'cgroup' },
      { root: '/b\tc', mountPoint: '/sys/fs/cgroup', fsType: 'cgroup2' },
    ]);
    for (const [text, n] of [
      [`${line('/')}\n30 25 0:26 / /x rw shared:1 cgroup2 cgroup rw\n`, 2],
      ['30 25 0:26 / /x rw -\n', 1],
      ['30 25 0:26 / /x -\n', 1],
    ] as const) {
      const e = thrown(() => parseMountinfo(text));
      expect(e).toBeInstanceOf(MalformedInput);
      expect(e.code).toBe(WorkloadErrorCode.MOUNTINFO_MALFORMED);
      expect(e.message).toBe(`invalid mountinfo entry on line ${n}`);
      expect(e.fields).toEqual({ line: n, rule: 'mountinfo-fields' });
    }
  });
  it('surrounding whitespace does not shift the fields', () => {
    expect(parseMountinfo(`  ${line('/a')}  \n`)).toEqual([{ root: '/a', mountPoint: '/sys/fs/cgroup', fsType: 'cgroup2' }]);
  });
  it('only cgroup and cgroup2 mounts with a root other than / count', () => {
    const root = `/kubepods/besteffort/pod${UID}/${ID}`;
    expect(locateFromMountinfo(parseMountinfo(line(root, 'overlay')))).toBeUndefined();
    expect(locateFromMountinfo(parseMountinfo(line(root, 'tmpfs')))).toBeUndefined();
    expect(locateFromMountinfo(parseMountinfo(line('/')))).toBeUndefined();
    for (const fs of ['cgroup', 'cgroup2']) {
      const r = locateFromMountinfo(parseMountinfo(line(root, fs)));
      expect([r?.containerId.toString(), r?.podUid?.toString(), r?.via, r?.path]).toEqual([ID, UID, 'mountinfo', root]);
    }
    const e = thrown(() => locateFromMountinfo(parseMountinfo(`${line(root, 'cgroup')}\n${line(`/docker/${ID2}`, 'cgroup')}`)));
    expect(e.code).toBe(WorkloadErrorCode.MULTIPLE_CONTAINER_IDS);
  });
  it('the fallback runs only when enabled and the cgroup file is absent or all-root', () => {
    const forged = line(`/kubepods/besteffort/pod${UID}/${ID}`);
    let reads = 0;
    const mountinfo = () => (reads++, forged);
    const on = { mountinfoFallback: true };
    expect(locateContainer({ cgroup: undefined, mountinfo }, on)?.via).toBe('mountinfo');
    expect(locateContainer({ cgroup: '12:pids:/\n0::/\n', mountinfo }, on)?.containerId.toString()).toBe(ID);
    expect(reads).toBe(2);
    expect(locateContainer({ cgroup: '12:pids:/\n0::/user.slice\n', mountinfo }, on)).toBeUndefined();
    expect(locateContainer({ cgroup: '0::/\n' }, on)).toBeUndefined();
    expect(locateContainer({ cgroup: undefined, mountinfo })).toBeUndefined();
    expect(reads).toBe(2);
    expect(locateContainer({ cgroup: '0::/\n', mountinfo: () => undefined }, on)).toBeUndefined();
  });
  it('configured matchers replace the path walk and never fall back to mountinfo', () => {
    const forged = line(`/docker/${ID2}`);
    const matchers = CgroupMatchers.parse(['/docker/<id>']);
    let read = false;
    expect(locateContainer({ cgroup: '0::/\n', mountinfo: () => ((read = true), forged) }, { mountinfoFallback: true, matchers })).toBeUndefined();
    expect(read).toBe(false);
    // the built-in walk would find this one; the matchers do not
    expect(locateContainer({ cgroup: `0::/system.slice/docker-${ID}.scope\n` }, { matchers })).toBeUndefined();
    expect(locateContainer({ cgroup: `0::/docker/${ID}\n` }, { matchers })?.containerId.toString()).toBe(ID);
  });
});

describe('configured matchers (SPIRE container_id_cgroup_matchers)', () => {
  it('must start with / and hold exactly one <id>', () => {
    for (const [i, bad] of ['docker/<id>', '/docker/*', '/<id>/<id>'].entries()) {
      const e = thrown(() => CgroupMatchers.parse(['/ok/<id>', bad]));
      expect(e).toBeInstanceOf(MalformedInput);
      expect(e.code).toBe(WorkloadErrorCode.MATCHER_INVALID);
      expect(e.message, String(i)).toBe('container_id_cgroup_matchers[1] must start with / and contain one <id>');
      expect(e.fields).toEqual({ index: 1, rule: 'matcher-shape' });
    }
  });
  it('match whole paths, one segment per *, with regex characters taken literally', () => {
    const m = CgroupMatchers.parse(['/a.b/*/<id>']);
    expect(m.match(`/a.b/x/${ID}`)?.containerId.toString()).toBe(ID);
    expect(m.match(`/aXb/x/${ID}`)).toBeUndefined();
    expect(m.match(`/a.b/${ID}`)).toBeUndefined();
    expect(m.match(`/a.b/x/y/${ID}`)).toBeUndefined();
    expect(m.match(`/pre/a.b/x/${ID}`)).toBeUndefined();
    expect(m.match(`/a.b/x/${ID}/post`)).toBeUndefined();
    expect(CgroupMatchers.parse(['/(x)+/<id>']).match(`/xx/${ID}`)).toBeUndefined();
    expect(CgroupMatchers.parse(['/(x)+/<id>']).match(`/(x)+/${ID}`)?.containerId.toString()).toBe(ID);
  });
  it('the first pattern that matches decides; an empty ID is refused, an invalid one is MalformedInput', () => {
    const m = CgroupMatchers.parse(['/docker/<id>', '/docker/*/<id>']);
    expect(m.match(`/docker/x/${ID}`)?.containerId.toString()).toBe(ID);
    const e = thrown(() => m.match('/docker/'));
    expect(e).toBeInstanceOf(PreconditionFailed);
    expect(e.code).toBe(WorkloadErrorCode.MATCHER_EMPTY_ID);
    expect(e.grpcCode).toBe(GrpcCode.FAILED_PRECONDITION);
    expect([e.message, e.fields.rule]).toEqual(['a pattern matched, but no container id was found', 'matcher-empty-id']);
    expect(thrown(() => m.match('/docker/not-an-id'))).toBeInstanceOf(MalformedInput);
  });
  it('lines matched to different containers are refused', () => {
    const m = CgroupMatchers.parse(['/docker/<id>']);
    expect(thrown(() => m.locate([`/docker/${ID}`, `/docker/${ID2}`])).code).toBe(WorkloadErrorCode.MULTIPLE_CONTAINER_IDS);
    const r = m.locate(['/', `/docker/${ID}`]);
    expect([r?.containerId.toString(), r?.via, r?.path]).toEqual([ID, 'cgroup', `/docker/${ID}`]);
  });
});

describe('rootless podman socket choice', () => {
  const rootful = 'unix:///run/podman/podman.sock';
  const tmpl = 'unix:///run/user/%d/podman/podman.sock';
  it('only a whole user-<uid>.slice segment with a 32-bit UID picks the user socket', () => {
    expect(podmanSocketFor('/user.slice/user-1000.slice/user@1000.service/x', rootful, tmpl)).toBe('unix:///run/user/1000/podman/podman.sock');
    expect(podmanSocketFor('user-7.slice', rootful, tmpl)).toBe('unix:///run/user/7/podman/podman.sock');
    expect(podmanSocketFor('/user.slice/user-4294967295.slice', rootful, tmpl)).toBe('unix:///run/user/4294967295/podman/podman.sock');
    expect(podmanSocketFor('/user.slice/user-4294967296.slice', rootful, tmpl)).toBe(rootful);
    expect(podmanSocketFor(`/user.slice/user-${'9'.repeat(30)}.slice`, rootful, tmpl)).toBe(rootful);
    expect(podmanSocketFor('/user.slice/xuser-1000.slice/x', rootful, tmpl)).toBe(rootful);
    expect(podmanSocketFor('/user.slice/user-1000.slicex/x', rootful, tmpl)).toBe(rootful);
    expect(podmanSocketFor('/user.slice/user-.slice/x', rootful, tmpl)).toBe(rootful);
    expect(podmanSocketFor('/machine.slice/libpod-x.scope', rootful, tmpl)).toBe(rootful);
  });
});
