/**
 * Real processes in real cgroups of this host, for tests of the PID → container path: the cgroup v1 hierarchies and
 * the v2 unified mount of the hybrid layout. A lab remembers every directory and process it created and removes them
 * in `cleanup()`, failing when a cgroup is left behind.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { builtPlugin } from './binaries.js';
import { PluginHarness } from './plugin-harness.js';

export const CGROUP_V1 = '/sys/fs/cgroup/pids';
export const CGROUP_V1_FREEZER = '/sys/fs/cgroup/freezer';
export const CGROUP_V2 = '/sys/fs/cgroup/unified';

/** SIGKILLs every process that is still running and waits until each has exited (its cgroup can then go). */
export async function killAndWait(children: Iterable<ChildProcess>): Promise<void> {
  await Promise.all(
    [...children].map(
      (c) =>
        new Promise<void>((resolve) => {
          if (c.exitCode !== null || c.signalCode !== null) return resolve();
          c.once('exit', () => resolve());
          c.kill('SIGKILL');
        }),
    ),
  );
}

/** Why real cgroups cannot be used here (the suites then fail, naming it), or undefined. */
export function cgroupProblem(roots: readonly string[] = [CGROUP_V1, CGROUP_V2]): string | undefined {
  if (process.getuid?.() !== 0) return 'not running as root';
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8').split('\n');
  for (const root of roots) {
    const fs = root === CGROUP_V2 ? 'cgroup2' : 'cgroup';
    if (!mounts.some((l) => l.includes(` ${root} `) && l.includes(` - ${fs} `))) return `${root} is not a ${fs} mount (see mount | grep cgroup)`;
    const probe = join(root, `cgroup-lab-probe-${process.pid}`);
    try {
      mkdirSync(probe);
      rmdirSync(probe);
    } catch (err) {
      return `${root} is not writable: ${(err as Error).message}`;
    }
  }
  return undefined;
}

/** Processes and cgroup directories one test file creates; `cleanup()` kills and removes all of them. */
export class CgroupLab {
  readonly #dirs: string[] = [];
  readonly #children = new Set<ChildProcess>();
  readonly #plugins: PluginHarness[] = [];

  /** Creates `rel` under the hierarchy `root` (each missing level remembered for cleanup); returns its path. */
  mkdir(root: string, rel: string): string {
    let cur = root;
    for (const part of rel.split('/').filter(Boolean)) {
      cur = join(cur, part);
      if (!existsSync(cur)) {
        mkdirSync(cur);
        this.#dirs.push(cur);
      }
    }
    return cur;
  }

  /** A real `sleep` placed into the given cgroup of each hierarchy (as a root process in a container could place itself). */
  async processIn(where: Readonly<Record<string, string>>): Promise<ChildProcess> {
    const c = this.track(spawn('sleep', ['600'], { stdio: 'ignore' }));
    await new Promise<void>((resolve, reject) => {
      c.once('spawn', () => resolve());
      c.once('error', reject);
    });
    for (const [root, rel] of Object.entries(where)) writeFileSync(join(this.mkdir(root, rel), 'cgroup.procs'), String(c.pid));
    return c;
  }

  track(child: ChildProcess): ChildProcess {
    this.#children.add(child);
    child.once('exit', () => this.#children.delete(child));
    return child;
  }

  /** The shipped edge-workload, configured with `hcl`. */
  async workloadAttestor(hcl: string): Promise<PluginHarness> {
    const p = await PluginHarness.launch({ binary: builtPlugin('edge-workload'), type: 'WorkloadAttestor', env: { KUBERNETES_SERVICE_HOST: undefined } });
    this.#plugins.push(p);
    await p.init([]);
    await p.configure(hcl);
    return p;
  }

  async cleanup(): Promise<void> {
    for (const p of this.#plugins.splice(0)) await p.kill();
    await killAndWait(this.#children);
    for (const d of this.#dirs.splice(0).reverse()) {
      for (let i = 0; i < 50 && existsSync(d); i++) {
        try {
          rmdirSync(d);
        } catch {
          await new Promise((r) => setTimeout(r, 20));
        }
      }
      if (existsSync(d)) throw new Error(`cgroup left behind: ${d}`);
    }
  }
}

