// herald's admin page: every node publishes a snapshot of its counters
// each second on the reserved channel herald-admin:nodes; this page reads
// them over SSE (/admin/stream), draws the totals, and lists this node's
// channels. Every request carries the admin token. The dashboard shows once
// the stream has accepted the token; until then, the sign-in form.
const $ = (id) => document.getElementById(id);
const nodes = new Map(); // node → {last snapshot, in/s, out/s}
const history = { conns: [], inRate: [], outRate: [] }; // one point a second, the last 60
let token = sessionStorage.getItem('herald-admin-token') || '';
let es;

function setState(text, state) {
  $('state').textContent = text;
  $('state').dataset.state = state;
}

// signedIn shows the dashboard (on) or the sign-in form (off).
function signedIn(on) {
  $('signin').hidden = on;
  $('dashboard').hidden = !on;
  $('signout').hidden = !on;
}

function connect() {
  es?.close();
  es = new EventSource('/admin/stream?token=' + encodeURIComponent(token));
  setState('connecting', 'connecting');
  es.onopen = () => {
    setState('live', 'open');
    signedIn(true);
  };
  es.onerror = () => {
    if (es.readyState !== EventSource.CLOSED) return setState('reconnecting', 'closed');
    setState('refused: check the token', 'closed');
    signedIn(false);
  };
  es.addEventListener('node', (e) => {
    const s = JSON.parse(e.data);
    const prev = nodes.get(s.node);
    const dt = prev ? (s.time - prev.s.time) / 1000 : 0;
    nodes.set(s.node, {
      s,
      seen: Date.now(),
      inRate: dt > 0 ? Math.max(0, (s.messages_in - prev.s.messages_in) / dt) : 0,
      outRate: dt > 0 ? Math.max(0, (s.messages_out - prev.s.messages_out) / dt) : 0,
    });
  });
  refreshChannels();
}

function totals() {
  // A node silent for 5 s has left the cluster.
  for (const [id, n] of nodes) if (Date.now() - n.seen > 5000) nodes.delete(id);
  const t = { conns: 0, channels: 0, inRate: 0, outRate: 0, drops: 0 };
  for (const { s, inRate, outRate } of nodes.values()) {
    t.conns += s.connections;
    t.channels += s.channels;
    t.inRate += inRate;
    t.outRate += outRate;
    t.drops += s.slow_consumers;
  }
  return t;
}

function render() {
  const t = totals();
  $('nodes-count').textContent = nodes.size;
  $('connections').textContent = t.conns;
  $('channels').textContent = t.channels;
  $('in-rate').textContent = t.inRate.toFixed(1);
  $('out-rate').textContent = t.outRate.toFixed(1);
  $('drops').textContent = t.drops;
  for (const [k, v] of [['conns', t.conns], ['inRate', t.inRate], ['outRate', t.outRate]]) {
    history[k].push(v);
    if (history[k].length > 60) history[k].shift();
  }
  draw($('chart-conns'), [history.conns]);
  draw($('chart-rates'), [history.inRate, history.outRate]);
  // Each cell carries its column's name, which a narrow screen shows beside
  // the value.
  const labels = [...document.querySelectorAll('.nodes th')].map((th) => th.textContent);
  $('nodes').replaceChildren(...[...nodes.values()].map(({ s, inRate, outRate }) => {
    const tr = document.createElement('tr');
    [s.node, s.broker_up ? 'up' : 'DOWN', s.connections, s.subscriptions, inRate.toFixed(1), outRate.toFixed(1), s.refusals].forEach((v, i) => {
      const td = document.createElement('td');
      td.textContent = v;
      td.dataset.label = labels[i];
      if (i === 1 && !s.broker_up) td.className = 'bad';
      tr.append(td);
    });
    return tr;
  }));
}

// draw plots series (the first in the accent colour) on canvas, the newest
// point at the right edge, against a scale from 0 to a round number above
// the highest point, written in the top left corner. It first sizes the
// drawing buffer to the canvas's size on the screen, so that the lines stay
// sharp at any width.
function draw(canvas, series) {
  const ratio = window.devicePixelRatio || 1;
  const [cw, ch] = [Math.round(canvas.clientWidth * ratio), Math.round(canvas.clientHeight * ratio)];
  if (!cw || !ch) return; // hidden
  if (canvas.width !== cw || canvas.height !== ch) [canvas.width, canvas.height] = [cw, ch];
  const g = canvas.getContext('2d');
  const { width: w, height: h } = canvas;
  g.clearRect(0, 0, w, h);
  const top = roundUp(Math.max(1, ...series.flat()) * 1.1);
  const pad = 4 * ratio;
  const y = (v) => h - pad - (v / top) * (h - 2 * pad);
  const style = getComputedStyle(document.documentElement);
  g.fillStyle = g.strokeStyle = style.getPropertyValue('--line');
  g.lineWidth = ratio;
  g.beginPath();
  g.moveTo(0, Math.round(y(top)) + 0.5);
  g.lineTo(w, Math.round(y(top)) + 0.5);
  g.stroke();
  g.fillStyle = style.getPropertyValue('--muted');
  g.font = `${11 * ratio}px system-ui, sans-serif`;
  g.textBaseline = 'top';
  g.fillText(String(top), 0, y(top) + 2 * ratio);
  series.forEach((points, i) => {
    g.strokeStyle = i === 0 ? style.getPropertyValue('--accent') : style.getPropertyValue('--muted');
    g.lineWidth = 2 * ratio;
    g.beginPath();
    points.forEach((v, x) => {
      const px = w - ((points.length - 1 - x) / 59) * w;
      x ? g.lineTo(px, y(v)) : g.moveTo(px, y(v));
    });
    g.stroke();
  });
}

// roundUp returns the smallest round number (1, 1.2, 1.5, 2, 2.5, 3, 4, 5,
// 6 or 8 times a power of ten) that is at least v.
function roundUp(v) {
  const p = 10 ** Math.floor(Math.log10(v));
  return [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10].map((m) => Number((m * p).toPrecision(2))).find((n) => n >= v);
}

async function refreshChannels() {
  if (!token) return;
  try {
    const res = await fetch('/admin/channels', { headers: { Authorization: 'Bearer ' + token } });
    if (!res.ok) return;
    const { channels } = await res.json();
    $('no-channels').hidden = channels.length > 0;
    $('channel-list').replaceChildren(...channels.map((c) => {
      const tr = document.createElement('tr');
      for (const v of [c.channel, c.subscribers]) {
        const td = document.createElement('td');
        td.textContent = v;
        tr.append(td);
      }
      return tr;
    }));
  } catch {
    // the stream's state shows the outage
  }
}

$('signin').addEventListener('submit', (e) => {
  e.preventDefault();
  token = $('token').value;
  sessionStorage.setItem('herald-admin-token', token);
  connect();
});

$('signout').addEventListener('click', () => {
  es?.close();
  token = '';
  sessionStorage.removeItem('herald-admin-token');
  $('token').value = '';
  nodes.clear();
  for (const points of Object.values(history)) points.length = 0;
  $('channel-list').replaceChildren();
  $('no-channels').hidden = true;
  setState('signed out', 'closed');
  signedIn(false);
});

$('publish').addEventListener('submit', async (e) => {
  e.preventDefault();
  const text = $('pub-data').value;
  let data;
  try {
    data = JSON.parse(text);
  } catch {
    data = text;
  }
  const res = await fetch('/admin/publish', {
    method: 'POST',
    headers: { Authorization: 'Bearer ' + token, 'Content-Type': 'application/json' },
    body: JSON.stringify({ channel: $('pub-channel').value, data, event: $('pub-event').value || undefined }),
  });
  const body = await res.json();
  $('pub-result').textContent = res.ok ? 'published at ' + body.offset : body.error.code + ': ' + body.error.message;
});

setInterval(render, 1000);
setInterval(refreshChannels, 2000);
if (token) {
  $('token').value = token;
  connect();
}
