// Herald's browser chat demo: plain JavaScript on the client library (herald-client.js,
// built from clients/js). Served by herald at /demo/ with HERALD_DEMO=1 (development only).
import { HeraldClient } from "./herald-client.js";

const DEMO_USERS = { 1: "ann", 2: "bob", 3: "cleo", 4: "dan" };
const PAGE = 30; // messages per pull of older history
const TYPING_EVERY_MS = 2000; // resend "typing" this often while typing
const TYPING_SHOWN_MS = 4000; // show someone typing this long after their last signal

const $ = (id) => document.getElementById(id);
const el = (tag, className, text) => {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
};

let client;
let me;
let token; // the current demo token
let current; // the gid shown
/** Per group: { latest, lastRead }, from hello and what arrives since. */
const positions = new Map();
/** Per group: Map msgid → message, and the lowest msgid loaded (older ones are pulled on scroll). */
const history = new Map();
const oldest = new Map();
/** Per group: the first msgid the server still keeps, once a pull met its retention limit. */
const kept = new Map();
/** Per group: Map uid → how far they have read. */
const readers = new Map();
/** Own messages not yet confirmed, by cmid: { gid, text }. */
const pending = new Map();
const typing = new Map(); // uid → timer
let lastTypingSent = 0;
let loadingOlder = false;

// ---------------------------------------------------------------------------------------
// Signing in

for (const [uid, name] of Object.entries(DEMO_USERS)) {
  const button = el("button", "", `${name} (${uid})`);
  button.dataset.uid = uid;
  button.onclick = () => signIn(Number(uid));
  $("users").append(button);
}
const asked = new URLSearchParams(location.search).get("uid");
if (asked) signIn(Number(asked));

async function demoToken(uid) {
  const reply = await fetch("token", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ uid }),
  });
  if (!reply.ok) throw new Error(`POST /demo/token: ${reply.status} ${await reply.text()}`);
  return reply.json();
}

async function signIn(uid) {
  me = uid;
  const first = await demoToken(uid);
  token = first.token;
  client = new HeraldClient({
    url: location.origin,
    token,
    getToken: async () => (token = (await demoToken(uid)).token),
    backoff: { baseMs: 250, capMs: 2000 },
  });
  window.heraldClient = client; // for the browser test and the curious
  client.on("state", showState);
  client.on("hello", onHello);
  client.on("message", onMessage);
  client.on("reads", ({ gid, reads }) => reads.forEach((r) => setRead(gid, r.uid, r.msgid)));
  client.on("signal", onSignal);
  client.on("presence", ({ gid }) => gid === current && renderMembers());
  client.on("members", ({ gid }) => gid === current && renderMembers());
  client.on("groupList", renderGroups);
  client.on("event", onEvent);
  $("signin").hidden = true;
  $("chat").hidden = false;
  $("me").textContent = `Signed in as ${DEMO_USERS[uid]} (${uid})`;
  await client.connect();
  await open(first.gid);
}

// ---------------------------------------------------------------------------------------
// Connection

let everOpen = false;
function showState(state) {
  if (state.status === "open") everOpen = true;
  $("banner").hidden = state.status === "open" || !everOpen;
  if (state.status === "stopped") $("banner").textContent = `Disconnected: ${state.meaning}`;
}

function onHello(hello) {
  for (const g of hello.groups) {
    const known = positions.get(g.gid);
    positions.set(g.gid, {
      latest: Math.max(g.latest, known?.latest ?? 0),
      lastRead: Math.max(g.last_read, known?.lastRead ?? 0),
    });
    if (!history.has(g.gid)) {
      history.set(g.gid, new Map());
      oldest.set(g.gid, g.last_ack + 1); // the client delivers what is above last_ack
    }
  }
  renderGroups();
  if (current !== undefined) loadReads(current); // reads may have moved while away
}

// ---------------------------------------------------------------------------------------
// Groups

function unread(gid) {
  const p = positions.get(gid);
  return p ? Math.max(0, p.latest - p.lastRead) : 0;
}

function groupName(gid) {
  return client.groups.get(gid)?.name ?? `group ${gid}`;
}

function renderGroups() {
  if (current !== undefined) $("title").textContent = groupName(current);
  const list = $("groups");
  list.replaceChildren();
  for (const gid of positions.keys()) {
    const item = el("li", gid === current ? "current" : "", groupName(gid));
    item.dataset.gid = gid;
    item.append(el("span", "unread", unread(gid) > 0 ? String(unread(gid)) : ""));
    item.onclick = () => open(gid);
    list.append(item);
  }
}

async function open(gid) {
  current = gid;
  renderGroups();
  renderMessages();
  renderMembers();
  await Promise.all([loadOlder(), loadReads(gid), client.online(gid).then(renderMembers)]);
  scrollToEnd();
}

// ---------------------------------------------------------------------------------------
// Messages

function onMessage(message) {
  const p = positions.get(message.gid) ?? { latest: 0, lastRead: 0 };
  p.latest = Math.max(p.latest, message.msgid);
  positions.set(message.gid, p);
  if (message.from === me) markRead(message.gid, message.msgid); // one's own messages are read
  if (!history.has(message.gid)) history.set(message.gid, new Map());
  history.get(message.gid).set(message.msgid, message);
  if (message.from === me) pending.delete(message.cmid);
  clearTyping(message.from);
  renderGroups();
  if (message.gid === current) {
    const atEnd = nearEnd();
    renderMessages();
    if (atEnd || message.from === me) scrollToEnd();
  }
}

/** Pulls the page of messages before the oldest loaded one. */
async function loadOlder() {
  const gid = current;
  const below = oldest.get(gid) ?? 1;
  if (loadingOlder || below <= 1) return;
  loadingOlder = true;
  try {
    const after = Math.max(0, below - 1 - PAGE);
    const page = await client.pull(gid, after, below - 1 - after);
    const pane = $("messages");
    const fromBottom = pane.scrollHeight - pane.scrollTop;
    for (const m of page.msgs) if (m.msgid < below) history.get(gid).set(m.msgid, m);
    // Below `first` the server keeps nothing: there is no older page to pull.
    if (page.first !== undefined) kept.set(gid, page.first);
    oldest.set(gid, page.first === undefined ? after + 1 : 1);
    if (gid === current) {
      renderMessages();
      pane.scrollTop = pane.scrollHeight - fromBottom; // keep what was on screen in place
    }
  } finally {
    loadingOlder = false;
  }
}

$("messages").addEventListener("scroll", () => {
  if ($("messages").scrollTop < 40) loadOlder();
});

function nick(uid) {
  return client.members(current)?.users.get(uid)?.nickname ?? DEMO_USERS[uid] ?? `user ${uid}`;
}

const seen = new IntersectionObserver((entries) => {
  for (const entry of entries) {
    if (!entry.isIntersecting || document.visibilityState !== "visible") continue;
    markRead(current, Number(entry.target.dataset.msgid));
  }
}, { root: $("messages") });

function markRead(gid, msgid) {
  const p = positions.get(gid);
  if (!p || msgid <= p.lastRead) return;
  p.lastRead = msgid;
  client.markRead(gid, msgid);
  renderGroups();
}

function renderMessages() {
  const pane = $("messages");
  seen.disconnect();
  pane.replaceChildren();
  const gid = current;
  if ((oldest.get(gid) ?? 1) > 1) pane.append(el("li", "older", "scroll up for older messages"));
  else if (kept.has(gid)) pane.append(el("li", "gone", "older messages are no longer kept"));
  const msgs = [...(history.get(gid)?.values() ?? [])].sort((a, b) => a.msgid - b.msgid);
  const reads = readers.get(gid) ?? new Map();
  for (const [i, m] of msgs.entries()) {
    const item = el("li", m.from === me ? "mine" : "");
    item.dataset.msgid = m.msgid;
    item.append(el("span", "from", nick(m.from)), messageText(m));
    if (m.from === me) item.append(el("span", "state", "✓"));
    // Who has read up to here: their position is at this message or before the next one.
    const next = msgs[i + 1]?.msgid ?? Infinity;
    const here = [...reads].filter(([uid, at]) => uid !== me && at >= m.msgid && at < next);
    if (here.length > 0) item.append(el("span", "readers", `read by ${here.map(([uid]) => nick(uid)).join(", ")}`));
    pane.append(item);
    seen.observe(item);
  }
  for (const [cmid, p] of pending) {
    if (p.gid !== gid) continue;
    const item = el("li", "mine pending");
    item.dataset.cmid = cmid;
    item.append(el("span", "from", nick(me)), el("span", "text", p.text), el("span", "state", "…"));
    pane.append(item);
  }
}

/** A message's text, or what became of it: recalled, or its sender's data erased. */
function messageText(m) {
  if (m.tombstone !== undefined) return el("span", "text tombstone", `message ${m.tombstone}`);
  return el("span", "text", m.body?.text ?? JSON.stringify(m.body));
}

/** A recalled message loses its body here as it did on the server. */
function onEvent(event) {
  if (event.event !== "message_recalled") return;
  const message = history.get(event.gid)?.get(event.msgid);
  if (!message) return;
  history.get(event.gid).set(event.msgid, { ...message, body: undefined, tombstone: "recalled" });
  if (event.gid === current) renderMessages();
}

function nearEnd() {
  const pane = $("messages");
  return pane.scrollHeight - pane.scrollTop - pane.clientHeight < 60;
}

function scrollToEnd() {
  const pane = $("messages");
  pane.scrollTop = pane.scrollHeight;
}

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("text").value.trim();
  if (!text || current === undefined) return;
  $("text").value = "";
  const gid = current;
  const cmid = `demo-${me}-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`;
  pending.set(cmid, { gid, text });
  renderMessages();
  scrollToEnd();
  client.signal(gid, "stopped_typing");
  lastTypingSent = 0;
  // Retried by the library until stored (once, whatever the reconnects); ✓ once it is.
  client.send(gid, { text }, { cmid }).then(
    (sent) => {
      if (!pending.delete(cmid)) return; // the pushed message came first
      history.get(gid)?.set(sent.msgid, { gid, msgid: sent.msgid, from: me, ts: sent.ts, cmid, body: { text } });
      if (gid === current) renderMessages();
    },
    (error) => {
      pending.delete(cmid);
      alert(`not sent: ${error.message}`);
      renderMessages();
    },
  );
});

// ---------------------------------------------------------------------------------------
// Read marks, typing, members

async function loadReads(gid) {
  const reply = await fetch(`/v1/groups/${gid}/reads`, { headers: { authorization: `Bearer ${token}` } });
  if (!reply.ok) return;
  for (const r of (await reply.json()).reads) setRead(gid, r.uid, r.msgid);
}

function setRead(gid, uid, msgid) {
  if (!readers.has(gid)) readers.set(gid, new Map());
  const reads = readers.get(gid);
  if ((reads.get(uid) ?? 0) >= msgid) return;
  reads.set(uid, msgid);
  if (uid === me) {
    const p = positions.get(gid);
    if (p) p.lastRead = Math.max(p.lastRead, msgid); // read on another device
    renderGroups();
  }
  if (gid === current) renderMessages();
}

$("text").addEventListener("input", () => {
  if (current === undefined) return;
  if ($("text").value === "") {
    client.signal(current, "stopped_typing");
    lastTypingSent = 0;
  } else if (Date.now() - lastTypingSent > TYPING_EVERY_MS) {
    client.signal(current, "typing");
    lastTypingSent = Date.now();
  }
});

function onSignal({ gid, from, kind }) {
  if (gid !== current) return;
  if (kind === "typing") {
    clearTimeout(typing.get(from));
    typing.set(from, setTimeout(() => clearTyping(from), TYPING_SHOWN_MS));
  } else if (kind === "stopped_typing") {
    clearTyping(from);
    return;
  }
  renderTyping();
}

function clearTyping(uid) {
  clearTimeout(typing.get(uid));
  if (typing.delete(uid)) renderTyping();
}

function renderTyping() {
  const names = [...typing.keys()].map(nick);
  $("typing").textContent = names.length === 0 ? "" : `${names.join(", ")} ${names.length === 1 ? "is" : "are"} typing…`;
}

function renderMembers() {
  const list = $("members");
  list.replaceChildren();
  const group = client.members(current);
  const online = client.onlineMembers(current) ?? new Set();
  for (const uid of [...(group?.members.keys() ?? [])].sort((a, b) => a - b)) {
    const item = el("li", online.has(uid) ? "online" : "");
    item.dataset.uid = uid;
    item.append(el("span", "dot"), nick(uid) + (uid === me ? " (you)" : ""));
    list.append(item);
  }
}
