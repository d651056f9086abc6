/**
 * A real Herald for the tests: a fresh database on the running PostgreSQL, the `herald`
 * binary started on 127.0.0.1:0, its address read from the `herald ready` log line, and
 * everything removed afterwards. Also the admin API calls the tests need, and a TCP relay
 * that can cut a client's connection the way a network does.
 */

import { execFile, spawn, type ChildProcess } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const run = promisify(execFile);

const here = path.dirname(fileURLToPath(import.meta.url));
/** clients/js, from build-test/test/. */
const packageRoot = path.resolve(here, "..", "..");
const BIN = process.env.HERALD_BIN ?? path.resolve(packageRoot, "../../target/debug/herald");
const BASE_DATABASE_URL = process.env.HERALD_TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:54329/herald";
export const ADMIN_KEY = "js-test-admin-key-0123456789";
const JWT_SECRET = "js-test-jwt-secret-0123456789";

let databases = 0;

function psql(): string {
  if (process.env.PSQL !== undefined) return process.env.PSQL;
  const debian = "/usr/lib/postgresql";
  if (existsSync(debian)) {
    const versions = readdirSync(debian).sort((a, b) => Number(a) - Number(b));
    const newest = versions.at(-1);
    if (newest !== undefined && existsSync(`${debian}/${newest}/bin/psql`)) return `${debian}/${newest}/bin/psql`;
  }
  return "psql";
}

async function sql(statement: string): Promise<string> {
  const { stdout } = await run(psql(), [BASE_DATABASE_URL, "-tAqc", statement]);
  return stdout;
}

/** Databases left by test processes that died before dropping them (named herald_js_<pid>_<n>). */
async function dropLeftovers(): Promise<void> {
  const names = await sql("SELECT datname FROM pg_database WHERE datname LIKE 'herald\\_js\\_%'");
  for (const name of names.split("\n").filter((line) => line !== "")) {
    const pid = Number(name.split("_")[2]);
    if (!Number.isInteger(pid) || pid === process.pid || isAlive(pid)) continue;
    await sql(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Every herald started and not yet stopped: killed if the test process exits early. */
const running = new Set<ChildProcess>();
process.on("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

function databaseUrl(name: string): string {
  const url = new URL(BASE_DATABASE_URL);
  url.pathname = `/${name}`;
  return url.toString();
}

export class Herald {
  private process: ChildProcess | undefined;
  /** `host:port`, kept across restarts. */
  private address = "127.0.0.1:0";
  readonly log: string[] = [];

  private constructor(
    private readonly database: string,
    private readonly env: Record<string, string>,
  ) {}

  /** A Herald on a database of its own. */
  static async start(env: Record<string, string> = {}): Promise<Herald> {
    if (databases === 0) await dropLeftovers();
    databases += 1;
    const database = `herald_js_${process.pid}_${databases}`;
    await sql(`DROP DATABASE IF EXISTS ${database}`);
    await sql(`CREATE DATABASE ${database}`);
    const herald = new Herald(database, env);
    await herald.launch();
    return herald;
  }

  get url(): string {
    return `http://${this.address}`;
  }

  get port(): number {
    return Number(this.address.split(":")[1]);
  }

  private launch(): Promise<void> {
    const child = spawn(BIN, ["serve"], {
      env: {
        ...process.env,
        DATABASE_URL: databaseUrl(this.database),
        HERALD_JWT_SECRET: JWT_SECRET,
        HERALD_ADMIN_KEY: ADMIN_KEY,
        HERALD_LISTEN: this.address,
        HERALD_LOG_FORMAT: "json",
        HERALD_PRESENCE_DEBOUNCE_MS: "300",
        // Sessions end at `exp` itself, so the expiry tests need not wait out a leeway.
        HERALD_JWT_LEEWAY_S: "0",
        ...this.env,
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.process = child;
    running.add(child);
    child.once("exit", () => running.delete(child));
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`herald did not log ready in 20 s:\n${this.log.join("\n")}`)), 20_000);
      child.once("error", (error) => {
        clearTimeout(timer);
        reject(new Error(`starting ${BIN} (build it with cargo build --bin herald): ${error.message}`));
      });
      const exitedEarly = (code: number | null): void => {
        clearTimeout(timer);
        reject(new Error(`herald exited (${code}) before it was ready:\n${this.log.join("\n")}`));
      };
      child.once("exit", exitedEarly);
      createInterface({ input: child.stderr! }).on("line", (line) => this.log.push(line));
      createInterface({ input: child.stdout! }).on("line", (line) => {
        this.log.push(line);
        let entry: { message?: unknown; addr?: unknown };
        try {
          entry = JSON.parse(line) as typeof entry;
        } catch {
          return;
        }
        if (entry.message === "herald ready" && typeof entry.addr === "string") {
          this.address = entry.addr;
          clearTimeout(timer);
          child.off("exit", exitedEarly);
          resolve();
        }
      });
    });
  }

  /** kill -9, as a crash would; or SIGTERM, a graceful stop (sessions closed with 1012). */
  async kill(signal: "SIGKILL" | "SIGTERM" = "SIGKILL"): Promise<void> {
    const child = this.process;
    this.process = undefined;
    if (child === undefined || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill(signal);
    await exited;
  }

  /** Starts it again on the same port and database. */
  async restart(signal: "SIGKILL" | "SIGTERM" = "SIGKILL"): Promise<void> {
    await this.kill(signal);
    await this.launch();
  }

  /** Kills it and drops its database. */
  async stop(): Promise<void> {
    await this.kill();
    await sql(`DROP DATABASE IF EXISTS ${this.database} WITH (FORCE)`);
  }

  // ---------------------------------------------------------------------------------------
  // HTTP

  async http(method: string, pathname: string, bearer: string, body?: unknown): Promise<unknown> {
    const response = await fetch(`${this.url}${pathname}`, {
      method,
      headers: { authorization: `Bearer ${bearer}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    if (!response.ok) throw new Error(`${method} ${pathname}: ${response.status} ${text}`);
    return text === "" ? undefined : (JSON.parse(text) as unknown);
  }

  admin(method: string, pathname: string, body?: unknown): Promise<unknown> {
    return this.http(method, `/v1/admin${pathname}`, ADMIN_KEY, body);
  }

  async users(...uids: number[]): Promise<void> {
    await this.admin("POST", "/users", { users: uids.map((uid) => ({ uid, nickname: `user${uid}` })) });
  }

  async group(owner: number, members: number[]): Promise<number> {
    const reply = (await this.admin("POST", "/groups", { name: "team", owner, members })) as { gid: number };
    return reply.gid;
  }

  async token(uid: number, ttlS = 3600): Promise<string> {
    const reply = (await this.admin("POST", "/tokens", { uid, ttl_s: ttlS })) as { token: string };
    return reply.token;
  }

  /** Every stored message of a group, read over HTTP as `uid`. */
  async messages(uid: number, gid: number): Promise<Array<{ msgid: number; cmid: string; from: number; body: unknown }>> {
    const token = await this.token(uid);
    const all: Array<{ msgid: number; cmid: string; from: number; body: unknown }> = [];
    for (;;) {
      const after = all.at(-1)?.msgid ?? 0;
      const page = (await this.http("GET", `/v1/groups/${gid}/messages?after=${after}&limit=1000`, token)) as {
        msgs: typeof all;
        more: boolean;
      };
      all.push(...page.msgs);
      if (!page.more) return all;
    }
  }
}

/**
 * A TCP relay in front of Herald, standing in for the network between one client and the
 * server: it can cut every connection, refuse new ones for a while, or swallow what the
 * server says (so a reply is lost while the request got through).
 */
export class Relay {
  private readonly sockets = new Set<net.Socket>();
  private refusing = false;
  private swallowing = false;

  private constructor(
    private readonly server: net.Server,
    readonly port: number,
  ) {}

  static async start(target: () => number): Promise<Relay> {
    let relay: Relay | undefined;
    const server = net.createServer((client) => relay?.accept(client, target()));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const address = server.address();
    if (address === null || typeof address === "string") throw new Error("relay has no port");
    relay = new Relay(server, address.port);
    return relay;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  private accept(client: net.Socket, port: number): void {
    if (this.refusing) {
      client.destroy();
      return;
    }
    const upstream = net.connect(port, "127.0.0.1");
    this.sockets.add(client).add(upstream);
    client.on("data", (data) => upstream.write(data));
    upstream.on("data", (data) => {
      if (!this.swallowing) client.write(data);
    });
    const close = (): void => {
      client.destroy();
      upstream.destroy();
      this.sockets.delete(client);
      this.sockets.delete(upstream);
    };
    client.on("close", close).on("error", close);
    upstream.on("close", close).on("error", close);
  }

  /** Cuts every connection; with `refuse`, new ones are refused until `allow`. */
  cut(refuse = false): void {
    this.refusing = refuse;
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
  }

  allow(): void {
    this.refusing = false;
  }

  /** Drops whatever the server sends from now on (until the next cut). */
  swallow(on: boolean): void {
    this.swallowing = on;
  }

  async stop(): Promise<void> {
    this.cut(true);
    await new Promise((resolve) => this.server.close(resolve));
  }
}

/** Waits until `condition` holds, checking every 20 ms. */
export async function eventually(
  what: string,
  condition: () => boolean | Promise<boolean>,
  timeoutMs = 15_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
