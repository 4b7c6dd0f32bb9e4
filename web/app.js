// The demo chat page: rooms are channels chat:<room>. A chat message's data
// is {"name", "text", "ts"}; {"type": "hello", "name"} tells the room who a
// client is, since presence only knows client ids. The chat talks WebSocket
// through herald.js; the live feed reads the same room with a plain
// EventSource from /sse.
import { Herald } from '/herald.js';

const $ = (id) => document.getElementById(id);
const ROOM = /^[A-Za-z0-9_\-.:@=,]{1,64}$/; // channel-name characters

const herald = new Herald();
const names = new Map(); // client id → name, learned from messages
const present = new Map(); // client id → user id, of the current room's members
const shown = new Set(); // offsets already on screen
let sub = null;
let me = '';

herald.on('state', (s) => {
  $('state').textContent = s;
  $('state').dataset.state = s;
});

// Fill the form from last time.
$('name').value = localStorage.getItem('herald.name') || '';
$('room').value = decodeURIComponent(location.hash.slice(1)) || localStorage.getItem('herald.room') || 'lobby';
($('name').value ? $('text') : $('name')).focus();

$('entry').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const name = $('name').value.trim();
  const room = $('room').value.trim();
  if (!name) return $('name').focus();
  if (!ROOM.test(room)) {
    $('room').setCustomValidity('Letters, digits and _ - . : @ = , only');
    return $('room').reportValidity();
  }
  $('room').setCustomValidity('');
  localStorage.setItem('herald.name', name);
  localStorage.setItem('herald.room', room);
  history.replaceState(null, '', '#' + encodeURIComponent(room));
  join(name, room);
});

$('composer').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const text = $('text').value.trim();
  if (!text || !sub) return;
  $('text').value = '';
  try {
    await herald.publish(sub.channel, { name: me, text, ts: Date.now() });
  } catch (e) {
    system(`Not sent (${e.code || 'error'}): ${text}`);
  }
});

function join(name, room) {
  const channel = 'chat:' + room;
  feedRoom = room;
  syncFeed();
  if (sub && sub.channel === channel && me === name) return;
  me = name;
  if (sub) sub.unsubscribe();
  $('messages').replaceChildren();
  shown.clear();
  present.clear();
  $('title').textContent = '# ' + room;
  $('text').disabled = $('send').disabled = false;
  $('text').focus();

  const s = herald.subscribe(channel, (data, m) => show(m));
  sub = s;
  let again = false;
  s.on('subscribed', ({ recovered }) => {
    // After a reconnect this client has a new id: say who it is again,
    // quietly. When the server could not resume the room (it restarted),
    // fetch history as on joining, to fill the gap and learn names.
    if (again) hello(s, true);
    if (!again || !recovered) catchUp(s, $('messages').lastChild);
    again = true;
    refreshWho(s);
  });
  s.on('join', (m) => presenceEvent('join', m));
  s.on('leave', (m) => presenceEvent('leave', m));
  s.on('error', (e) => system(`Could not join (${e.code || 'error'}): ${e.message}`));
  hello(s, false);
}

// catchUp shows the room's recent history, oldest first, after the element
// after (at the top when null): what came live meanwhile stays below it.
async function catchUp(s, after) {
  let msgs;
  try {
    msgs = await s.history();
  } catch {
    return;
  }
  if (sub !== s) return;
  const before = after ? after.nextSibling : $('messages').firstChild;
  for (const m of msgs) show(m, before);
}

// pendingWho collects the joins and leaves that arrive while a presence
// request is in flight: its snapshot may predate them.
let pendingWho = null;

function presenceEvent(op, m) {
  if (pendingWho) pendingWho.push([op, m]);
  applyPresence(op, m);
  renderWho();
}

// member reports whether a presence entry is someone in the room: an SSE
// stream (a live feed, this page's own included) only reads, so the list
// leaves it out.
const member = (c) => c.transport !== 'sse';

function applyPresence(op, m) {
  if (op === 'join' && member(m)) present.set(m.client, m.user);
  else present.delete(m.client);
}

// refreshWho asks who is in the room now, then replays on top of the
// answer the joins and leaves that came while it was on its way.
async function refreshWho(s) {
  const events = (pendingWho = []);
  try {
    const clients = await s.presence();
    if (sub !== s) return;
    present.clear();
    for (const c of clients) if (member(c)) present.set(c.client, c.user);
    for (const [op, m] of events) applyPresence(op, m);
    renderWho();
  } catch (e) {
    system(`Presence failed (${e.code || 'error'})`);
  } finally {
    if (pendingWho === events) pendingWho = null;
  }
}

function hello(s, again) {
  herald.publish(s.channel, { type: 'hello', name: me, again }).catch(() => {});
}

// show renders message m before the element before (or at the end).
function show(m, before = null) {
  if (shown.has(m.offset)) return;
  shown.add(m.offset);
  const d = m.data;
  const obj = d && typeof d === 'object' ? d : {};
  if (typeof obj.name === 'string' && m.client) {
    names.set(m.client, obj.name);
    if (present.has(m.client)) renderWho();
  }
  if (obj.type === 'hello') {
    if (!obj.again) system(`${obj.name} joined`, before);
    return;
  }
  const text = typeof d === 'string' ? d : typeof obj.text === 'string' ? obj.text : JSON.stringify(d);
  const from = obj.name || names.get(m.client) || m.user || 'someone';
  const when = new Date(typeof obj.ts === 'number' ? obj.ts : Date.now());

  const li = el('li', 'msg');
  if (m.client && m.client === herald.client) li.classList.add('mine');
  const meta = el('div', 'meta');
  meta.append(el('span', 'from', from));
  const time = el('time', '', when.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }));
  time.dateTime = when.toISOString();
  meta.append(time);
  li.append(meta, el('div', 'text', text));
  add(li, before, li.classList.contains('mine'));
}

function system(text, before = null) {
  add(el('li', 'sys', text), before);
}

// add inserts li and keeps the list scrolled to the end if it was there,
// or if scroll says so.
function add(li, before, scroll = false) {
  const list = $('messages');
  const atEnd = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.insertBefore(li, before);
  if (!before && (atEnd || scroll)) list.scrollTop = list.scrollHeight;
}

function renderWho() {
  const items = [...present.keys()].map((c) => {
    const you = c === herald.client;
    const li = el('li', you ? 'you' : '', you ? me : names.get(c) || present.get(c) || 'guest ' + c.slice(-4));
    if (you) li.append(el('small', '', ' (you)'));
    li.dataset.client = c;
    return li;
  });
  items.sort((a, b) => a.textContent.localeCompare(b.textContent));
  $('who').replaceChildren(...items);
  $('count').textContent = present.size ? `(${present.size})` : '';
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

// The live feed: while it is shown, an EventSource on /sse follows the
// current room and lists each message as it arrives. Opened again on the
// same room, it resumes from the last event id it saw, so nothing published
// meanwhile is missed; the server says herald.unrecovered when its history
// no longer reaches back that far.
const FEED_MAX = 200; // entries kept on screen
let view = 'chat';
let feedRoom = '';
let es = null; // the feed's EventSource, if any
let esChannel = '';
let feedChannel = ''; // the channel the entries on screen come from
let lastId = '';

$('tab-chat').addEventListener('click', () => setView('chat'));
$('tab-feed').addEventListener('click', () => setView('feed'));
$('sse-notice').addEventListener('click', () => ($('sse-notice').hidden = true));

function setView(v) {
  view = v;
  $('tab-chat').setAttribute('aria-selected', String(v === 'chat'));
  $('tab-feed').setAttribute('aria-selected', String(v === 'feed'));
  $('messages').hidden = v !== 'chat';
  $('feed-view').hidden = v !== 'feed';
  syncFeed();
}

// syncFeed keeps one EventSource open on the current room while the feed
// is shown, and none otherwise.
function syncFeed() {
  const channel = view === 'feed' && feedRoom ? 'chat:' + feedRoom : '';
  if (es && esChannel === channel && es.readyState !== EventSource.CLOSED) return;
  if (es) es.close();
  es = null;
  esChannel = channel;
  if (!channel) return feedState();

  let url = '/sse?channel=' + encodeURIComponent(channel);
  if (channel === feedChannel && lastId) {
    url += '&lastEventId=' + encodeURIComponent(lastId);
  } else {
    feedChannel = channel;
    lastId = '';
    $('feed').replaceChildren();
    $('feed').dataset.empty = `Waiting for messages in ${channel}…`;
    $('sse-notice').hidden = true;
    showLastId('');
  }
  const src = (es = new EventSource(url));
  const mine = (fn) => (e) => es === src && fn(e);
  src.addEventListener('open', mine(feedState));
  src.addEventListener('error', mine(() => {
    feedState();
    if (src.readyState === EventSource.CLOSED) notice('The server refused the stream. Open the feed again to retry.');
  }));
  src.addEventListener('message', mine((e) => {
    showLastId(e.lastEventId);
    feedMessage(e.data);
  }));
  src.addEventListener('herald.binary', mine((e) => {
    showLastId(e.lastEventId);
    let n = '?';
    try {
      n = atob(e.data).length;
    } catch {}
    feedAdd(el('li', 'feed-item sys', `binary message, ${n} bytes`));
  }));
  src.addEventListener('herald.unrecovered', mine(() => {
    notice(`Some messages of ${channel} were missed: the server's history no longer reaches back to where the feed left off.`);
  }));
  feedState();
}

function feedState() {
  const s = es ? ['connecting', 'open', 'closed'][es.readyState] : 'closed';
  $('sse-state').textContent = s;
  $('sse-state').dataset.state = s;
}

// showLastId shows the stream's cursor, shortened around where it differs
// from the one before: successive cursors share long runs of characters.
function showLastId(id) {
  const prev = lastId;
  lastId = id;
  const out = $('sse-last-id');
  out.title = id;
  if (!id) return (out.textContent = 'none');
  const n = 12;
  if (id.length <= n + 2) return (out.textContent = id);
  let i = 0;
  while (i < id.length - 1 && id[i] === prev[i]) i++;
  const from = Math.min(Math.max(0, i - 4), id.length - n);
  out.textContent = (from > 0 ? '…' : '') + id.slice(from, from + n) + (from + n < id.length ? '…' : '');
}

function notice(text) {
  $('sse-notice').textContent = text;
  $('sse-notice').hidden = false;
}

// feedMessage lists one message: the data itself when it was a JSON
// string, its JSON otherwise (SSE does not tell the two apart).
function feedMessage(data) {
  let d = data;
  try {
    d = JSON.parse(data);
  } catch {}
  const obj = d && typeof d === 'object' && !Array.isArray(d) ? d : null;
  if (obj && obj.type === 'hello') {
    const who = typeof obj.name === 'string' ? obj.name : 'someone';
    return feedAdd(el('li', 'feed-item sys hello', obj.again ? `${who} is back` : `${who} joined`));
  }
  const li = el('li', 'feed-item');
  if (obj && typeof obj.text === 'string') {
    li.append(el('span', 'from', typeof obj.name === 'string' && obj.name ? obj.name : 'someone'), el('span', 'text', obj.text));
  } else {
    li.append(el('span', 'text', data));
  }
  feedAdd(li);
}

function feedAdd(li) {
  const list = $('feed');
  const atEnd = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.append(li);
  while (list.childElementCount > FEED_MAX) list.firstElementChild.remove();
  if (atEnd) list.scrollTop = list.scrollHeight;
}
