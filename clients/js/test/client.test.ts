/**
 * HeraldClient against a real Herald (see herald.ts), with `ws` as the WebSocket.
 */

import assert from "node:assert/strict";
import { afterEach, beforeEach, test } from "node:test";
import WebSocket from "ws";

import {
  HeraldClient,
  HeraldError,
  type ConnectionState,
  type GroupEvent,
  type HeraldClientOptions,
  type Message,
  type Presence,
  type Reads,
  type Signal,
} from "@herald/client";

import { Herald, Relay, eventually, sleep } from "./herald.js";

const FAST_BACKOFF = { baseMs: 100, capMs: 500 };

let herald: Herald;
const clients: HeraldClient[] = [];
const relays: Relay[] = [];

beforeEach(async () => {
  herald = await Herald.start();
});

afterEach(async () => {
  for (const client of clients.splice(0)) client.close();
  for (const relay of relays.splice(0)) await relay.stop();
  await herald.stop();
});

/** A client of `uid`, with a recorder of what it delivers. */
async function connect(
  uid: number,
  options: Partial<HeraldClientOptions> = {},
): Promise<{ client: HeraldClient; messages: Message[]; states: ConnectionState[] }> {
  const client = new HeraldClient({
    url: herald.url,
    getToken: () => herald.token(uid),
    WebSocket,
    backoff: FAST_BACKOFF,
    ...options,
  });
  clients.push(client);
  const messages: Message[] = [];
  const states: ConnectionState[] = [];
  client.on("message", (message) => messages.push(message));
  client.on("state", (state) => states.push(state));
  await client.connect();
  return { client, messages, states };
}

/** The texts of a group's messages, in the order they were delivered. */
function texts(messages: readonly Message[], gid: number): string[] {
  return messages.filter((m) => m.gid === gid).map((m) => (m.body as { text: string }).text);
}

function range(from: number, to: number, prefix: string): string[] {
  return Array.from({ length: to - from + 1 }, (_, i) => `${prefix}${from + i}`);
}

/** msgids of a group's delivered messages are 1, 2, 3… with none missing or repeated. */
function assertDense(messages: readonly Message[], gid: number, count: number): void {
  assert.deepEqual(
    messages.filter((m) => m.gid === gid).map((m) => m.msgid),
    Array.from({ length: count }, (_, i) => i + 1),
  );
}

test("messages sent by one client reach the other once, in order", async () => {
  await herald.users(1, 2);
  const gid = await herald.group(1, [2]);
  const ann = await connect(1);
  const bo = await connect(2);

  const sent = await Promise.all(range(1, 30, "m").map((text) => ann.client.send(gid, { text })));
  assert.deepEqual(
    sent.map((s) => s.msgid),
    range(1, 30, "").map(Number),
  );
  assert.ok(sent.every((s) => !s.dup && s.gid === gid && s.cmid.length > 0 && s.ts > 0));

  await eventually("bo has 30 messages", () => bo.messages.length >= 30);
  await eventually("ann has her own 30", () => ann.messages.length >= 30);
  await sleep(100);
  assert.deepEqual(texts(bo.messages, gid), range(1, 30, "m"));
  assertDense(bo.messages, gid, 30);
  assert.ok(bo.messages.every((m) => m.from === 1));
  assert.deepEqual(texts(ann.messages, gid), range(1, 30, "m"));
});

test("a client cut off resumes: what was sent meanwhile arrives once, in order", async () => {
  await herald.users(1, 2);
  const gid = await herald.group(1, [2]);
  const relay = await Relay.start(() => herald.port);
  relays.push(relay);
  const ann = await connect(1);
  const bo = await connect(2, { url: relay.url });

  for (const text of range(1, 5, "m")) await ann.client.send(gid, { text });
  await eventually("bo has the first 5", () => bo.messages.length === 5);

  relay.cut(true); // the network goes, and stays down for a while
  await eventually("bo notices", () => !bo.client.isOpen);
  for (const text of range(6, 25, "m")) await ann.client.send(gid, { text });
  relay.allow();

  await eventually("bo has all 25", () => bo.messages.length >= 25);
  await sleep(200);
  assert.deepEqual(texts(bo.messages, gid), range(1, 25, "m"));
  assertDense(bo.messages, gid, 25);
  assert.ok(bo.states.some((s) => s.status === "waiting"));

  // A new client (an app restarted) given the cursors resumes where the last one stopped.
  const cursors = bo.client.cursors();
  assert.deepEqual(cursors, { [gid]: 25 });
  bo.client.close();
  for (const text of range(26, 30, "m")) await ann.client.send(gid, { text });
  const again = await connect(2, { cursors });
  await eventually("the new client has the 5 it missed", () => again.messages.length >= 5);
  await sleep(200);
  assert.deepEqual(texts(again.messages, gid), range(26, 30, "m"));
});

test("a server killed and restarted mid-stream: both clients come back, nothing lost or doubled", async () => {
  await herald.users(1, 2);
  const gid = await herald.group(1, [2]);
  const ann = await connect(1);
  const bo = await connect(2);

  const total = 60;
  const sends: Promise<unknown>[] = [];
  let restarted: Promise<void> | undefined;
  for (let i = 1; i <= total; i += 1) {
    sends.push(ann.client.send(gid, { text: `m${i}` }));
    if (i === 20) restarted = herald.restart();
    await sleep(10);
  }
  await restarted;
  await Promise.all(sends);

  await eventually("bo has every message", () => bo.messages.length >= total, 20_000);
  await eventually("ann has every message", () => ann.messages.length >= total, 20_000);
  await sleep(300);
  for (const { messages } of [ann, bo]) {
    assertDense(messages, gid, total);
    assert.equal(new Set(texts(messages, gid)).size, total);
  }
  // Sends pipelined to a group are stored in the order they were sent; the retried ones after
  // the ones that got through, still in their own order.
  const stored = await herald.messages(1, gid);
  assert.equal(stored.length, total);
  assert.equal(new Set(stored.map((m) => m.cmid)).size, total);
  assert.deepEqual(
    stored.map((m) => (m.body as { text: string }).text).sort(),
    range(1, total, "m").sort(),
  );
  assert.ok(ann.states.some((s) => s.status === "waiting"));
  assert.ok(bo.states.some((s) => s.status === "waiting"));
});

test("a graceful restart (1012): the clients reconnect and pull what they missed", async () => {
  await herald.users(1, 2);
  const gid = await herald.group(1, [2]);
  const ann = await connect(1);
  const bo = await connect(2);
  for (const text of range(1, 5, "m")) await ann.client.send(gid, { text });
  await eventually("bo has 5", () => bo.messages.length === 5);

  await herald.restart("SIGTERM");
  for (const text of range(6, 10, "m")) await ann.client.send(gid, { text });
  await eventually("bo has 10", () => bo.messages.length >= 10);
  await sleep(200);
  assert.deepEqual(texts(bo.messages, gid), range(1, 10, "m"));
  assert.ok(bo.states.some((s) => s.status === "waiting" && s.code === 1012));
});

test("a send made while the server is down goes out once it is back: stored once", async () => {
  await herald.users(1, 2);
  const gid = await herald.group(1, [2]);
  const ann = await connect(1);

  await herald.kill();
  await eventually("ann notices", () => !ann.client.isOpen);
  const pending = ann.client.send(gid, { text: "while down" });
  await sleep(300);
  await herald.restart();
  const sent = await pending;
  assert.equal(sent.msgid, 1);

  const stored = await herald.messages(1, gid);
  assert.deepEqual(
    stored.map((m) => m.cmid),
    [sent.cmid],
  );
});

test("a send whose reply was lost is resent with its cmid and answered dup:true", async () => {
  await herald.users(1, 2);
  const gid = await herald.group(1, [2]);
  const relay = await Relay.start(() => herald.port);
  relays.push(relay);
  const ann = await connect(1, { url: relay.url, requestTimeoutMs: 1_000 });

  relay.swallow(true); // the send gets through; its `sent` (and the pushed `msg`) do not
  const pending = ann.client.send(gid, { text: "once" }, { cmid: "chosen-cmid-1" });
  await sleep(500);
  relay.swallow(false);
  relay.cut(); // the connection dies; the client reconnects and resends

  const sent = await pending;
  assert.equal(sent.cmid, "chosen-cmid-1");
  assert.equal(sent.dup, true);
  assert.equal(sent.msgid, 1);
  const stored = await herald.messages(1, gid);
  assert.deepEqual(
    stored.map((m) => m.cmid),
    ["chosen-cmid-1"],
  );
  // The message the swallowed push carried is pulled after the reconnect, once.
  await eventually("ann has her message", () => ann.messages.length === 1);
});

test("a connection gone silent is found by ping and replaced", async () => {
  await herald.stop();
  herald = await Herald.start({ HERALD_HEARTBEAT_S: "1" });
  await herald.users(1, 2);
  const gid = await herald.group(1, [2]);
  const relay = await Relay.start(() => herald.port);
  relays.push(relay);
  const ann = await connect(1, { url: relay.url, requestTimeoutMs: 1_000 });
  const bo = await connect(2);

  relay.swallow(true); // the socket stays open, but nothing comes through any more
  await bo.client.send(gid, { text: "unheard" });
  await eventually(
    "ann gives the silent session up",
    () => ann.states.some((s) => s.status === "waiting" && s.reason === "no pong"),
    10_000,
  );
  // Attempts made meanwhile open a socket but get no `hello`: each is given up in turn.
  await eventually("an attempt without hello given up", () => ann.states.some((s) => s.status === "waiting" && s.reason === "no hello"), 10_000);
  relay.swallow(false);
  await eventually("ann is back with the message", () => ann.messages.length === 1, 10_000);
  assert.deepEqual(texts(ann.messages, gid), ["unheard"]);
});

test("an expired token (4001) is replaced through getToken and the session resumes", async () => {
  await herald.users(1, 2);
  const gid = await herald.group(1, [2]);
  let minted = 0;
  const ann = await connect(1, {
    getToken: () => {
      minted += 1;
      // The first token lives 2 s; the server closes the session with 4001 when it expires.
      return herald.token(1, minted === 1 ? 2 : 3600);
    },
  });
  const bo = await connect(2);

  await eventually(
    "ann's session closed with 4001",
    () => ann.states.some((s) => s.status === "waiting" && s.code === 4001),
    10_000,
  );
  await bo.client.send(gid, { text: "after expiry" });
  await eventually("ann is back and has it", () => ann.messages.length === 1, 10_000);
  assert.equal(minted, 2);
  assert.deepEqual(texts(ann.messages, gid), ["after expiry"]);
  assert.ok(!ann.states.some((s) => s.status === "stopped"));
});

test("a fixed token that expires stops the client for good", async () => {
  await herald.users(1);
  const token = await herald.token(1, 1);
  const client = new HeraldClient({ url: herald.url, token, WebSocket, backoff: FAST_BACKOFF });
  clients.push(client);
  const states: ConnectionState[] = [];
  client.on("state", (state) => states.push(state));
  await client.connect();
  await eventually("stopped", () => states.some((s) => s.status === "stopped"), 10_000);
  const last = states.at(-1);
  assert.equal(last?.status, "stopped");
  assert.equal(last.code, 4001);
  assert.equal(last.meaning, "token expired");
  await assert.rejects(client.send(1, "late"), { code: "closed" });
});

test("a deactivated user's client stops for good with 4003; sends made after it reject", async () => {
  await herald.users(1, 2);
  const gid = await herald.group(1, [2]);
  const bo = await connect(2);
  await herald.admin("POST", "/users/2/deactivate");
  await eventually("stopped", () => bo.states.some((s) => s.status === "stopped"), 10_000);
  const last = bo.states.at(-1);
  assert.equal(last?.status, "stopped");
  assert.equal(last.code, 4003);
  await sleep(500); // several backoff delays: no attempt follows
  assert.deepEqual(
    bo.states.slice(bo.states.findIndex((s) => s.status === "open")).map((s) => s.status),
    ["open", "stopped"],
  );
  await assert.rejects(bo.client.send(gid, "late"), { code: "closed" });
});

test("acks: a burst of deliveries is acknowledged in a few cumulative frames, up to the newest", async () => {
  await herald.users(1, 2);
  const gid = await herald.group(1, [2]);
  const acks: number[] = [];
  /** `ws`, recording the ack frames the client writes. */
  class RecordingWebSocket extends WebSocket {
    override send(data: string, ...rest: unknown[]): void {
      const frame = JSON.parse(data) as { type: string; msgid?: number };
      if (frame.type === "ack" && frame.msgid !== undefined) acks.push(frame.msgid);
      (super.send as (data: string, ...rest: unknown[]) => void)(data, ...rest);
    }
  }
  const ann = await connect(1, { WebSocket: RecordingWebSocket as unknown as typeof WebSocket });
  const bo = await connect(2);

  const burst = 40;
  await Promise.all(range(1, burst, "b").map((text) => bo.client.send(gid, { text })));
  await eventually("ann has the burst", () => ann.messages.length === burst);
  const annToken = await herald.token(1);
  await eventually("the server holds ann's ack of the newest", async () => {
    const listed = (await herald.http("GET", "/v1/me/groups", annToken)) as { groups: Array<{ gid: number; last_ack: number }> };
    return listed.groups.find((g) => g.gid === gid)?.last_ack === burst;
  });
  assert.equal(acks.at(-1), burst, "the last ack names the newest msgid");
  assert.ok(acks.length <= 5, `${acks.length} ack frames for ${burst} messages: ${acks.join(",")}`);
  assert.deepEqual([...acks].sort((a, b) => a - b), acks, "cumulative: each ack above the last");
});

test("sync copies follow a membership change made by the admin API", async () => {
  await herald.users(1, 2, 3);
  const gid = await herald.group(1, [2]);
  const ann = await connect(1);
  const cy = await connect(3);

  await eventually("ann's member list", () => ann.client.members(gid)?.members.size === 2);
  assert.equal(ann.client.members(gid)?.members.get(1), "owner");
  assert.equal(ann.client.members(gid)?.members.get(2), "member");
  assert.equal(ann.client.profile?.nickname, "user1");
  assert.equal(ann.client.groups.get(gid)?.name, "team");
  await eventually("cy's group list (empty) synced", () => cy.client.profile !== undefined);
  assert.equal(cy.client.groups.size, 0);

  const changed: number[] = [];
  ann.client.on("members", ({ gid: changedGid }) => changed.push(changedGid));
  let notified = false;
  ann.client.on("syncNotify", () => (notified = true));

  await herald.admin("POST", `/groups/${gid}/members`, { uids: [3] });

  await eventually("ann sees cy as a member", () => ann.client.members(gid)?.members.get(3) === "member");
  await eventually("with cy's profile", () => ann.client.members(gid)?.users.get(3)?.nickname === "user3");
  await eventually("cy's group list has the group", () => cy.client.groups.has(gid));
  await eventually("cy's copy of the members", () => cy.client.members(gid)?.members.size === 3);
  assert.ok(changed.includes(gid));
  assert.ok(notified);

  // And a removal.
  await herald.admin("DELETE", `/groups/${gid}/members/2`);
  await eventually("bo is gone from ann's copy", () => !ann.client.members(gid)?.members.has(2));
  assert.equal(ann.client.members(gid)?.members.size, 2);
});

test("friend requests, the friend list and profiles follow sync_notify", async () => {
  await herald.users(1, 2);
  const gid = await herald.group(1, [2]);
  const ann = await connect(1);
  const bo = await connect(2);
  const requests: number[] = [];
  bo.client.on("friendRequest", ({ from }) => requests.push(from));
  await eventually("bo synced", () => bo.client.members(gid)?.users.get(1)?.nickname === "user1");

  await herald.http("POST", "/v1/friends", await herald.token(1), { uid: 2 });
  await eventually("bo is asked", () => requests.includes(1));
  await herald.http("POST", "/v1/friends", await herald.token(2), { uid: 1 });
  await eventually("ann's friends", () => ann.client.friends.has(2));
  await eventually("bo's friends", () => bo.client.friends.has(1));
  assert.equal(bo.client.friendProfiles.get(1)?.nickname, "user1");

  let profile: string | undefined;
  ann.client.on("profile", (me) => (profile = me.nickname));
  await herald.http("PATCH", "/v1/me", await herald.token(1), { nickname: "ann" });
  await eventually("ann's own profile", () => profile === "ann" && ann.client.profile?.nickname === "ann");
  await eventually("bo's copy of ann as a friend", () => bo.client.friendProfiles.get(1)?.nickname === "ann");
  await eventually("bo's copy of ann as a member", () => bo.client.members(gid)?.users.get(1)?.nickname === "ann");
});

test("presence: online() and presence events as members come and go", async () => {
  await herald.users(1, 2);
  const gid = await herald.group(1, [2]);
  const ann = await connect(1);
  const changes: Presence[] = [];
  ann.client.on("presence", (change) => changes.push(change));

  assert.deepEqual(await ann.client.online(gid), [1]);
  const bo = await connect(2);
  await eventually("bo online", () => changes.some((c) => c.uid === 2 && c.online));
  assert.deepEqual([...(ann.client.onlineMembers(gid) ?? [])].sort(), [1, 2]);

  bo.client.close();
  await eventually("bo offline", () => changes.some((c) => c.uid === 2 && !c.online));
  assert.deepEqual([...(ann.client.onlineMembers(gid) ?? [])], [1]);
  assert.deepEqual(changes, [
    { gid, uid: 2, online: true },
    { gid, uid: 2, online: false },
  ]);
});

test("read receipts: markRead reaches the group and the server; typing reaches the others", async () => {
  await herald.users(1, 2);
  const gid = await herald.group(1, [2]);
  const ann = await connect(1);
  const bo = await connect(2);
  const reads: Reads[] = [];
  const signals: Signal[] = [];
  ann.client.on("reads", (moved) => reads.push(moved));
  ann.client.on("signal", (signal) => signals.push(signal));
  for (const text of ["a", "b", "c"]) await ann.client.send(gid, { text });
  await eventually("bo has all three", () => bo.messages.length === 3);

  bo.client.signal(gid);
  await eventually("ann sees bo typing", () => signals.length === 1);
  assert.deepEqual(signals, [{ gid, from: 2, kind: "typing" }]);

  bo.client.markRead(gid, 2);
  await eventually("ann sees bo's read position", () =>
    reads.some((moved) => moved.reads.some((read) => read.uid === 2 && read.msgid === 2)),
  );
  // Recorded before it was told, so the server's view holds it already.
  const listed = (await herald.http("GET", "/v1/me/groups", await herald.token(2))) as {
    groups: Array<{ gid: number; last_read: number; latest: number }>;
  };
  assert.deepEqual(
    listed.groups.map(({ gid, last_read, latest }) => ({ gid, last_read, latest })),
    [{ gid, last_read: 2, latest: 3 }],
  );
});

test("recall: a member takes their message back, the group is told, pulls show the tombstone", async () => {
  await herald.users(1, 2);
  const gid = await herald.group(1, [2]);
  const bo = await connect(2);
  const ann = await connect(1);
  const recalls: GroupEvent[] = [];
  ann.client.on("event", (event) => {
    if (event.event === "message_recalled") recalls.push(event);
  });

  const first = await bo.client.send(gid, { text: "keep" });
  const second = await bo.client.send(gid, { text: "oops" });
  await bo.client.recall(gid, second.msgid);
  await eventually("ann is told", () => recalls.length === 1);
  const told = recalls[0];
  assert.ok(told !== undefined && told.event === "message_recalled");
  assert.equal(told.msgid, second.msgid);
  assert.equal(told.by, 2);

  const page = await ann.client.pull(gid);
  assert.deepEqual(
    page.msgs.map((m) => [m.msgid, m.body, m.tombstone]),
    [
      [first.msgid, { text: "keep" }, undefined],
      [second.msgid, undefined, "recalled"],
    ],
  );
  // Again: the same answer. Another's message: refused for a plain member.
  await bo.client.recall(gid, second.msgid);
  const third = await ann.client.send(gid, { text: "mine" });
  await assert.rejects(bo.client.recall(gid, third.msgid), (error: HeraldError) => error.code === "forbidden");
});

test("retention: a pull below the window says where history starts; a client resuming from below goes on there", async () => {
  await herald.stop();
  herald = await Herald.start({ HERALD_RETENTION_MAX_MESSAGES: "3", HERALD_RETENTION_INTERVAL_S: "1" });
  await herald.users(1, 2);
  const gid = await herald.group(1, [2]);
  const ann = await connect(1);
  for (const text of range(1, 6, "m")) await ann.client.send(gid, { text });

  await eventually("the pruner kept the newest 3", async () => (await ann.client.pull(gid, 0)).first === 4);
  const below = await ann.client.pull(gid, 2);
  assert.equal(below.first, 4);
  assert.deepEqual(
    below.msgs.map((m) => m.msgid),
    [4, 5, 6],
  );
  const edge = await ann.client.pull(gid, 3);
  assert.equal(edge.first, undefined, "nothing missing after 3");
  assert.deepEqual(
    edge.msgs.map((m) => m.msgid),
    [4, 5, 6],
  );

  // bo's cursor is 0: the resume pulls from there and delivers from the first kept.
  const bo = await connect(2, { cursors: { [gid]: 0 } });
  await eventually("bo has the 3 kept", () => bo.messages.length >= 3);
  assert.deepEqual(texts(bo.messages, gid), range(4, 6, "m"));
});
