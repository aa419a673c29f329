// headcount dashboard. Live numbers are pushed by the node (Server-Sent Events read
// with fetch so that request headers can be added, plus one websocket for the chosen
// topic); only the chosen topic's visit history (/stats/{topic}) is fetched, every
// 10 s while the topic stays chosen. Data from the network only ever reaches the page
// through textContent and attribute setters, never as markup.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const SVG_NS = "http://www.w3.org/2000/svg";
  const HOUR_MS = 3600 * 1000;
  const MAX_POINTS = 3600;
  const TOP_LIMIT = 20;
  const MINUS = "\u2212";
  const HISTORY_EVERY_MS = 10000;
  const HISTORY_TIMEOUT_MS = 9000;
  const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

  // ---------------------------------------------------------------- helpers

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function svg(tag, attrs) {
    const e = document.createElementNS(SVG_NS, tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    return e;
  }

  function setText(node, text) {
    const s = String(text);
    if (node.textContent !== s) node.textContent = s;
  }

  // Reconnect delays: 1 s doubling up to 30 s, each with jitter in [50 %, 100 %].
  function backoff() {
    let delay = 1000;
    return {
      next() {
        const d = delay * (0.5 + Math.random() / 2);
        delay = Math.min(delay * 2, 30000);
        return d;
      },
      reset() { delay = 1000; },
    };
  }

  function sleep(ms, signal) {
    return new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      signal.addEventListener("abort", () => { clearTimeout(t); resolve(); }, { once: true });
    });
  }

  // Topics go in URL paths with each segment percent-encoded; slashes stay.
  function encodeTopic(topic) {
    return topic.split("/").map(encodeURIComponent).join("/");
  }

  function wsUrl(topic) {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}/ws/${encodeTopic(topic)}?watch=1`;
  }

  // ------------------------------------------------------ server-sent events

  // The admin token, when the node wants one: asked once, kept for this tab.
  const TOKEN_KEY = "headcount-admin-token";
  let tokenWaiters = [];

  function requestHeaders(accept = "text/event-stream") {
    const headers = { Accept: accept };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = `Bearer ${token}`;
    return headers;
  }

  // Shows the token form; resolves once a token was entered.
  function askForToken() {
    sessionStorage.removeItem(TOKEN_KEY);
    $("token-form").hidden = false;
    $("token-input").focus();
    return new Promise((resolve) => tokenWaiters.push(resolve));
  }

  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token-input").value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token-input").value = "";
    $("token-form").hidden = true;
    const waiting = tokenWaiters;
    tokenWaiters = [];
    waiting.forEach((resolve) => resolve());
  });

  // Reads a text/event-stream body and calls onEvent({type, data}) for each event.
  // Lines are "field: value"; "event" names the event, "data" lines are joined with
  // "\n", a blank line ends the event, lines starting with ":" are comments.
  async function readEventStream(body, onEvent) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    let type = "";
    let data = [];
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += decoder.decode(value, { stream: true });
      // A trailing "\r" may be the first half of "\r\n": keep it for the next chunk.
      const lines = buf.split(/\r\n|\n|\r(?!$)/);
      buf = lines.pop();
      for (const line of lines) {
        if (line === "") {
          if (data.length) onEvent({ type: type || "message", data: data.join("\n") });
          type = "";
          data = [];
          continue;
        }
        if (line.startsWith(":")) continue;
        const i = line.indexOf(":");
        const field = i < 0 ? line : line.slice(0, i);
        let val = i < 0 ? "" : line.slice(i + 1);
        if (val.startsWith(" ")) val = val.slice(1);
        if (field === "event") type = val;
        else if (field === "data") data.push(val);
      }
    }
  }

  // Keeps one SSE stream open, reconnecting with backoff when it ends or fails.
  // onEvent gets {type, data: parsed JSON}; onState(name, "live" | "reconnecting").
  function openStream(name, path, onEvent) {
    const ctrl = new AbortController();
    const signal = ctrl.signal;
    const delays = backoff();
    setStreamState(name, "connecting");
    (async () => {
      while (!signal.aborted) {
        try {
          const res = await fetch(path, { headers: requestHeaders(), cache: "no-store", signal });
          if (res.status === 401) {
            setStreamState(name, "reconnecting");
            await askForToken();
            continue;
          }
          if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
          setStreamState(name, "live");
          let first = true;
          await readEventStream(res.body, (ev) => {
            if (first) { first = false; delays.reset(); }
            let payload;
            try { payload = JSON.parse(ev.data); } catch { return; }
            onEvent({ type: ev.type, data: payload });
          });
        } catch {
          // Network failure, HTTP error or abort: handled below.
        }
        if (signal.aborted) break;
        setStreamState(name, "reconnecting");
        await sleep(delays.next(), signal);
      }
      setStreamState(name, null);
    })();
    return { close: () => ctrl.abort() };
  }

  // ------------------------------------------------------------ live status

  const streamStates = new Map();
  const statusEl = $("status");

  function setStreamState(name, state) {
    if (state === null) streamStates.delete(name);
    else streamStates.set(name, state);
    const states = [...streamStates.values()];
    let overall = "live";
    if (states.includes("reconnecting")) overall = "reconnecting";
    else if (states.includes("connecting") || states.length === 0) overall = "connecting";
    statusEl.dataset.state = overall;
    setText(statusEl, overall);
  }

  // -------------------------------------------------------- cluster total

  // With an empty prefix the top-topics stream carries the cluster total too, so the
  // separate total stream is open only while a prefix filter is set. This keeps the
  // dashboard at three long-lived requests (browsers allow six per host over HTTP/1.1).
  const totalEl = $("total");
  let totalStream = null;

  function onTotal({ data }) {
    showTotal(data.total);
  }

  function showTotal(n) {
    setText(totalEl, n);
    document.title = `${n} \u00b7 headcount`;
  }

  function openTotal(needed) {
    if (needed && !totalStream) {
      totalStream = openStream("total", "/live/counts?prefix=&limit=0", onTotal);
    } else if (!needed && totalStream) {
      totalStream.close();
      totalStream = null;
    }
  }

  // ------------------------------------------------------------ top topics

  const topicsBody = $("topics").tBodies[0];
  const topicsEmpty = $("topics-empty");
  const prefixTotal = $("prefix-total");
  const prefixInput = $("prefix");
  const topicRows = new Map();
  let topicsStream = null;

  function topicRow(topic) {
    let row = topicRows.get(topic);
    if (row) return row;
    row = el("tr");
    row.dataset.topic = topic;
    const name = el("td", "topic");
    const pick = el("button", "pick", topic);
    pick.type = "button";
    pick.title = topic;
    const meter = el("span", "meter");
    meter.append(el("span"));
    name.append(pick, meter);
    row.append(name, el("td", "count n"));
    row.classList.toggle("selected", topic === currentTopic);
    topicRows.set(topic, row);
    return row;
  }

  function onTopics({ data }) {
    setText(prefixTotal, data.total);
    if (!openPrefix) showTotal(data.total);
    const list = Array.isArray(data.topics) ? data.topics : [];
    const max = list.reduce((m, t) => Math.max(m, t.count), 0);
    const seen = new Set();
    list.forEach((t, i) => {
      const row = topicRow(t.topic);
      seen.add(t.topic);
      setText(row.querySelector(".count"), t.count);
      row.querySelector(".meter > span").style.width = `${max ? (100 * t.count) / max : 0}%`;
      if (topicsBody.children[i] !== row) topicsBody.insertBefore(row, topicsBody.children[i] || null);
    });
    for (const [topic, row] of topicRows) {
      if (!seen.has(topic)) { row.remove(); topicRows.delete(topic); }
    }
    topicsEmpty.hidden = list.length > 0;
  }

  function openTopics() {
    if (topicsStream) topicsStream.close();
    for (const row of topicRows.values()) row.remove();
    topicRows.clear();
    setText(prefixTotal, "\u2014");
    topicsEmpty.hidden = true;
    const prefix = openPrefix;
    openTotal(prefix !== "");
    topicsStream = openStream(
      "topics",
      `/live/counts?prefix=${encodeURIComponent(prefix)}&limit=${TOP_LIMIT}`,
      onTopics,
    );
  }

  let prefixTimer = 0;
  let openPrefix = "";
  prefixInput.addEventListener("input", () => {
    clearTimeout(prefixTimer);
    prefixTimer = setTimeout(() => {
      const p = prefixInput.value.trim();
      if (p !== openPrefix) { openPrefix = p; openTopics(); }
    }, 300);
  });

  topicsBody.addEventListener("click", (e) => {
    const row = e.target.closest("tr[data-topic]");
    if (row) selectTopic(row.dataset.topic);
  });

  // --------------------------------------------------------------- members

  const membersBody = $("members").tBodies[0];
  const membersEmpty = $("members-empty");
  const membersSummary = $("members-summary");
  const nodesAlive = $("nodes-alive");
  const selfNode = $("self-node");
  const memberRows = new Map();
  const freshness = new Map(); // name -> {ageMs at receipt, receivedAt, stale}

  function memberRow(name) {
    let row = memberRows.get(name);
    if (row) return row;
    row = el("tr");
    row.dataset.member = name;
    const cell = el("td", "name");
    const line = el("span", "member-name");
    line.append(el("b", "", name));
    cell.append(line, el("span", "addr"));
    const state = el("td", "state");
    state.append(el("span", "badge"));
    const conns = el("td", "connections n");
    conns.dataset.label = "conns";
    const topics = el("td", "topics n");
    topics.dataset.label = "topics";
    row.append(cell, state, conns, topics, el("td", "fresh n"));
    memberRows.set(name, row);
    return row;
  }

  // last_update_ms: milliseconds since the member's latest update. A value that looks
  // like a Unix timestamp in ms (after 2001) is read as the time of that update.
  function ageOf(ms) {
    const v = Number(ms) || 0;
    return v > 1e12 ? Math.max(0, Date.now() - v) : Math.max(0, v);
  }

  function ago(ms) {
    if (ms < 1500) return "just now";
    const s = Math.round(ms / 1000);
    if (s < 60) return `${s} s ago`;
    const m = Math.round(s / 60);
    if (m < 60) return `${m} min ago`;
    return `${Math.round(m / 60)} h ago`;
  }

  function renderFreshness() {
    const now = performance.now();
    for (const [name, f] of freshness) {
      const row = memberRows.get(name);
      if (!row) continue;
      const cell = row.querySelector(".fresh");
      const text = ago(f.age + (f.isSelf ? 0 : now - f.at));
      setText(cell, f.stale ? `stale \u00b7 ${text}` : text);
      cell.classList.toggle("is-stale", f.stale);
    }
  }

  function onCluster({ data }) {
    const list = Array.isArray(data.members) ? data.members : [];
    const self = data.self || "";
    setText(selfNode, self ? `node ${self}` : "");
    const seen = new Set();
    const now = performance.now();
    let alive = 0;
    list.forEach((m, i) => {
      const row = memberRow(m.name);
      seen.add(m.name);
      const isSelf = m.name === self;
      const line = row.querySelector(".member-name");
      const tag = line.querySelector(".tag");
      if (isSelf && !tag) line.append(el("span", "tag", "self"));
      else if (!isSelf && tag) tag.remove();
      setText(row.querySelector(".addr"), m.addr || "");
      const state = String(m.state || "unknown");
      const badge = row.querySelector(".badge");
      setText(badge, state);
      badge.className = `badge ${state}`;
      row.classList.toggle("is-down", state === "down");
      setText(row.querySelector(".connections"), m.connections ?? 0);
      setText(row.querySelector(".topics"), m.topics ?? 0);
      freshness.set(m.name, { age: isSelf ? 0 : ageOf(m.last_update_ms), at: now, stale: !!m.stale, isSelf });
      if (state === "alive") alive++;
      if (membersBody.children[i] !== row) membersBody.insertBefore(row, membersBody.children[i] || null);
    });
    for (const [name, row] of memberRows) {
      if (!seen.has(name)) { row.remove(); memberRows.delete(name); freshness.delete(name); }
    }
    membersEmpty.hidden = list.length > 0;
    setText(membersSummary, `${alive} of ${list.length} alive`);
    setText(nodesAlive, `${alive} / ${list.length}`);
    renderFreshness();
  }

  setInterval(renderFreshness, 1000);

  // ----------------------------------------------------------------- chart

  const chart = $("chart");
  const chartSummary = $("chart-summary");
  const hourMax = $("hour-max");
  const hourMin = $("hour-min");
  let times = [];
  let values = [];

  const C = {
    grid: svg("g", {}),
    area: svg("path", { class: "area" }),
    line: svg("path", { class: "line" }),
    maxLine: svg("line", { class: "maxline" }),
    maxLabel: svg("text", { "text-anchor": "start" }),
    dot: svg("circle", { class: "dot", r: 3.5 }),
    current: svg("text", { class: "current", "text-anchor": "end" }),
    xLabels: svg("g", {}),
  };
  chart.append(C.grid, C.area, C.line, C.maxLine, C.maxLabel, C.dot, C.current, C.xLabels);

  function onTotalSeries({ type, data }) {
    if (type === "history") {
      const totals = Array.isArray(data.totals) ? data.totals.slice(-MAX_POINTS) : [];
      const step = Number(data.step_ms) || 1000;
      const end = Number(data.end_ms) || Date.now();
      times = totals.map((_, i) => end - (totals.length - 1 - i) * step);
      values = totals.map((v) => (v === null || v === undefined ? null : Number(v)));
    } else {
      const t = Number(data.t);
      if (!Number.isFinite(t)) return;
      const last = times.length ? times[times.length - 1] : -Infinity;
      if (t < last) return;
      if (t === last) values[values.length - 1] = Number(data.total);
      else { times.push(t); values.push(Number(data.total)); }
      if (times.length > MAX_POINTS) {
        times.splice(0, times.length - MAX_POINTS);
        values.splice(0, values.length - MAX_POINTS);
      }
    }
    drawChart();
  }

  // A round upper bound for the y axis.
  function niceCeil(v) {
    if (v <= 4) return 4;
    const mag = 10 ** Math.floor(Math.log10(v));
    for (const m of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) {
      if (m * mag >= v) return m * mag;
    }
    return 10 * mag;
  }

  function drawChart() {
    const box = chart.getBoundingClientRect();
    const W = Math.max(Math.round(box.width), 200);
    const H = Math.max(Math.round(box.height), 120);
    chart.setAttribute("viewBox", `0 0 ${W} ${H}`);
    const padL = 4, padR = 4, padT = 18, padB = 22;
    const plotW = W - padL - padR;
    const plotH = H - padT - padB;

    const end = times.length ? times[times.length - 1] : Date.now();
    const start = end - HOUR_MS;
    let max = 0;
    let min = Infinity;
    let current = null;
    for (let i = 0; i < values.length; i++) {
      if (times[i] < start || values[i] === null || !Number.isFinite(values[i])) continue;
      if (values[i] > max) max = values[i];
      if (values[i] < min) min = values[i];
    }
    for (let i = values.length - 1; i >= 0; i--) {
      if (values[i] !== null && Number.isFinite(values[i])) { current = values[i]; break; }
    }
    const top = niceCeil(max * 1.1);
    const x = (t) => padL + ((t - start) / HOUR_MS) * plotW;
    const y = (v) => padT + (1 - v / top) * plotH;
    const r = (n) => Math.round(n * 10) / 10;

    // grid: baseline, half and top
    C.grid.replaceChildren();
    for (const f of [0, 0.5, 1]) {
      const gy = r(padT + f * plotH);
      C.grid.append(svg("line", { class: "gridline", x1: padL, x2: W - padR, y1: gy, y2: gy }));
    }

    // series, broken at gaps
    let line = "";
    let area = "";
    let segStart = null;
    let prevX = null;
    const base = r(y(0));
    for (let i = 0; i < values.length; i++) {
      const v = values[i];
      if (times[i] < start || v === null || !Number.isFinite(v)) {
        if (segStart !== null) { area += `L${prevX},${base}L${segStart},${base}Z`; segStart = null; }
        continue;
      }
      const px = r(x(times[i]));
      const py = r(y(v));
      if (segStart === null) {
        line += `M${px},${py}`;
        area += `M${px},${py}`;
        segStart = px;
      } else {
        line += `L${px},${py}`;
        area += `L${px},${py}`;
      }
      prevX = px;
    }
    if (segStart !== null) area += `L${prevX},${base}L${segStart},${base}Z`;
    C.line.setAttribute("d", line);
    C.area.setAttribute("d", area);

    // max marker
    const my = r(y(max));
    C.maxLine.setAttribute("x1", padL);
    C.maxLine.setAttribute("x2", W - padR);
    C.maxLine.setAttribute("y1", my);
    C.maxLine.setAttribute("y2", my);
    C.maxLabel.setAttribute("x", padL + 2);
    C.maxLabel.setAttribute("y", my - 5);
    setText(C.maxLabel, `max ${max}`);
    C.maxLine.style.visibility = values.length ? "visible" : "hidden";
    C.maxLabel.style.visibility = values.length ? "visible" : "hidden";

    // current value at the newest point
    if (current !== null && times.length) {
      const cx = r(x(times[times.length - 1]));
      const cy = r(y(current));
      C.dot.setAttribute("cx", cx);
      C.dot.setAttribute("cy", cy);
      C.current.setAttribute("x", cx - 8);
      C.current.setAttribute("y", Math.max(cy - 8, 12));
      setText(C.current, current);
      C.dot.style.visibility = "visible";
      C.current.style.visibility = "visible";
    } else {
      C.dot.style.visibility = "hidden";
      C.current.style.visibility = "hidden";
    }

    // time axis
    C.xLabels.replaceChildren();
    const ticks = W < 480 ? [60, 30, 0] : [60, 45, 30, 15, 0];
    for (const m of ticks) {
      const tx = r(x(end - m * 60000));
      const anchor = m === 60 ? "start" : m === 0 ? "end" : "middle";
      const label = svg("text", { x: tx, y: H - 5, "text-anchor": anchor });
      label.textContent = m === 0 ? "now" : `${MINUS}${m} min`;
      C.xLabels.append(label);
    }

    if (current !== null) {
      setText(hourMax, max);
      setText(hourMin, min);
      setText(chartSummary, `now ${current} \u00b7 max ${max}`);
      chart.setAttribute("aria-label", `Cluster total over the last hour: now ${current}, max ${max}`);
    }
  }

  new ResizeObserver(() => drawChart()).observe(chart);

  // ------------------------------------------------------------ topic panel

  const topicInput = $("topic-input");
  const topicCount = $("topic-count");
  const topicName = $("topic-name");
  const topicState = $("topic-state");
  const topicHint = $("topic-hint");
  const topicLive = $("topic-live");
  let currentTopic = "";
  let topicSocket = null;

  function validTopic(t) {
    const n = new TextEncoder().encode(t).length;
    // eslint-disable-next-line no-control-regex
    return n >= 1 && n <= 256 && !/[\u0000-\u001f\u007f-\u009f]/.test(t);
  }

  // One watch socket (?watch=1, never counted) with reconnect and backoff.
  function watchSocket(topic, onCount, onState) {
    const delays = backoff();
    let ws = null;
    let timer = 0;
    let closed = false;
    const connect = () => {
      ws = new WebSocket(wsUrl(topic));
      ws.onopen = () => { delays.reset(); onState("live"); };
      ws.onmessage = (m) => {
        try { onCount(JSON.parse(m.data).count); } catch { /* ignore a bad frame */ }
      };
      ws.onclose = () => {
        if (closed) return;
        onState("reconnecting");
        timer = setTimeout(connect, delays.next());
      };
    };
    connect();
    return {
      close() {
        closed = true;
        clearTimeout(timer);
        if (!ws) return;
        ws.onclose = ws.onmessage = null;
        // Closing a socket that is still connecting logs a console error: wait for open.
        if (ws.readyState === WebSocket.CONNECTING) ws.onopen = () => ws.close();
        else ws.close();
      },
    };
  }

  function selectTopic(topic) {
    topic = topic.trim();
    if (topic && !validTopic(topic)) {
      setText(topicHint, "A topic is 1 to 256 bytes with no control characters.");
      return;
    }
    if (topicSocket) { topicSocket.close(); topicSocket = null; }
    currentTopic = topic;
    topicInput.value = topic;
    for (const [t, row] of topicRows) row.classList.toggle("selected", t === topic);
    setText(topicName, topic);
    setText(topicCount, "\u2014");
    setText(topicState, "");
    setText(topicHint, topic ? "Watching live (not counted)." : "Pick a row in Top topics or type a topic.");
    topicLive.hidden = !topic;
    followHistory(topic);
    if (!topic) return;
    topicSocket = watchSocket(
      topic,
      (n) => setText(topicCount, n),
      (s) => setText(topicState, s === "live" ? "" : `\u00b7 ${s}`),
    );
  }

  // ---------------------------------------------------------- topic history

  // The chosen topic's last 30 days from GET /stats/{topic}: fetched when the topic
  // is chosen, then 10 s after each answer until another topic is chosen. A node
  // started with --no-history answers 404.
  const historyPanel = $("topic-history");
  const historyMessage = $("history-message");
  const historyBody = $("history-body");
  const historyLegend = $("history-legend");
  const historyViews = $("history-views");
  const historyVisitors = $("history-visitors");
  const historyPeak = $("history-peak");
  const historyChart = $("history-chart");
  const historyTitle = $("history-title");
  const historyNote = $("history-note");
  const HISTORY_IDLE = "Pick a topic to see its views and visitors per day, when history is enabled on this node.";
  let historyRun = null; // {topic, ctrl, timer} of the topic being followed
  let historyData = null; // the last answer shown

  // "2024-03-05" -> "Mar 5"
  function shortDate(date) {
    const [, m, d] = String(date).split("-").map(Number);
    return m >= 1 && m <= 12 && d ? `${MONTHS[m - 1]} ${d}` : String(date);
  }

  function plural(n, word) {
    return `${n} ${word}${n === 1 ? "" : "s"}`;
  }

  function showHistoryMessage(state, text) {
    historyPanel.dataset.state = state;
    setText(historyMessage, text);
    historyMessage.hidden = false;
    historyBody.hidden = true;
    historyLegend.hidden = true;
    historyData = null;
  }

  // Reads an answer into plain numbers; null when it is not a stats answer.
  function readStats(body) {
    if (!body || !Array.isArray(body.days)) return null;
    const n = (v) => (Number.isFinite(Number(v)) ? Math.max(0, Math.round(Number(v))) : 0);
    const days = body.days.map((d) => ({
      date: String(d && d.date),
      views: n(d && d.views),
      visitors: n(d && d.visitors),
      peak: n(d && d.peak),
    }));
    return {
      topic: String(body.topic ?? ""),
      from: String(body.from ?? ""),
      to: String(body.to ?? ""),
      views: n(body.views),
      visitors: n(body.visitors),
      peak: days.length ? days[days.length - 1].peak : 0,
      days,
    };
  }

  function showHistory(data) {
    historyData = data;
    historyPanel.dataset.state = "ready";
    historyMessage.hidden = true;
    historyBody.hidden = false;
    historyLegend.hidden = false;
    setText(historyViews, data.views);
    setText(historyVisitors, data.visitors);
    setText(historyPeak, data.peak);
    historyViews.title = `${plural(data.views, "view")} from ${data.from} to ${data.to}`;
    historyVisitors.title = `${plural(data.visitors, "visitor")} from ${data.from} to ${data.to}`;
    historyPeak.title = `at most ${data.peak} at once today`;
    setText(historyNote, "");
    drawHistory();
  }

  // One request; the outcome is shown unless another topic was chosen meanwhile.
  async function loadHistory(run) {
    const ctrl = new AbortController();
    run.ctrl = ctrl;
    const timeout = setTimeout(() => ctrl.abort(), HISTORY_TIMEOUT_MS);
    let outcome;
    try {
      const res = await fetch(`/stats/${encodeTopic(run.topic)}`, {
        headers: requestHeaders("application/json"),
        cache: "no-store",
        signal: ctrl.signal,
      });
      if (res.ok) {
        const data = readStats(await res.json());
        outcome = data ? { data } : { error: "History: unexpected answer." };
      } else if (res.status === 404) {
        outcome = { off: true };
      } else if (res.status === 401) {
        outcome = { error: "History needs the admin token.", auth: true };
      } else {
        outcome = { error: `History unavailable (HTTP ${res.status}).` };
      }
    } catch {
      outcome = { error: "History unavailable: no answer from the node." };
    } finally {
      clearTimeout(timeout);
    }
    if (historyRun !== run) return;
    run.ctrl = null;
    if (outcome.data) {
      showHistory(outcome.data);
    } else if (outcome.off) {
      showHistoryMessage("off", "Visit history is off on this node (started with --no-history).");
    } else if (historyData) {
      // Keep the last answer on screen and say that it is not current.
      historyPanel.dataset.state = "stale";
      setText(historyNote, `${outcome.error} Retrying every 10 s.`);
    } else {
      showHistoryMessage("error", outcome.error);
    }
    if (outcome.auth && !run.waitsForToken) {
      // The streams ask for the token; ask again as soon as one is entered.
      run.waitsForToken = true;
      tokenWaiters.push(() => {
        run.waitsForToken = false;
        if (historyRun === run && !run.ctrl) {
          clearTimeout(run.timer);
          loadHistory(run);
        }
      });
    }
    run.timer = setTimeout(() => loadHistory(run), HISTORY_EVERY_MS);
  }

  function stopHistory() {
    if (!historyRun) return;
    clearTimeout(historyRun.timer);
    if (historyRun.ctrl) historyRun.ctrl.abort();
    historyRun = null;
  }

  function followHistory(topic) {
    stopHistory();
    if (!topic) {
      showHistoryMessage("idle", HISTORY_IDLE);
      return;
    }
    showHistoryMessage("loading", "Loading visit history\u2026");
    historyRun = { topic, ctrl: null, timer: 0, waitsForToken: false };
    loadHistory(historyRun);
  }

  const H = {
    grid: svg("g", {}),
    bars: svg("g", { class: "bars" }),
    topLabel: svg("text", { class: "top", "text-anchor": "start" }),
    xLabels: svg("g", {}),
    hits: svg("g", { class: "hits" }),
  };
  historyChart.append(H.grid, H.bars, H.topLabel, H.xLabels, H.hits);

  function drawHistory() {
    const data = historyData;
    if (!data || historyBody.hidden) return;
    const box = historyChart.getBoundingClientRect();
    const W = Math.max(Math.round(box.width), 200);
    const H0 = Math.max(Math.round(box.height), 100);
    historyChart.setAttribute("viewBox", `0 0 ${W} ${H0}`);
    const padL = 4, padR = 4, padT = 16, padB = 20;
    const plotW = W - padL - padR;
    const plotH = H0 - padT - padB;
    const days = data.days;
    const n = Math.max(days.length, 1);
    const max = days.reduce((m, d) => Math.max(m, d.views, d.visitors), 0);
    const top = niceCeil(max);
    const slot = plotW / n;
    const barW = Math.max(1, Math.min(slot * 0.7, 24));
    const cx = (i) => padL + slot * (i + 0.5);
    const y = (v) => padT + (1 - v / top) * plotH;
    const r = (v) => Math.round(v * 10) / 10;
    const base = r(y(0));

    H.grid.replaceChildren();
    for (const f of [0, 0.5, 1]) {
      const gy = r(padT + f * plotH);
      H.grid.append(svg("line", { class: "gridline", x1: padL, x2: W - padR, y1: gy, y2: gy }));
    }
    H.topLabel.setAttribute("x", padL + 2);
    H.topLabel.setAttribute("y", padT - 5);
    setText(H.topLabel, top);

    // Per day: a wide bar for views, a narrow one inside it for visitors.
    const bar = (cls, x, w, v) => {
      const by = r(y(v));
      H.bars.append(svg("rect", {
        class: cls, x: r(x - w / 2), y: by, width: r(w), height: r(Math.max(base - by, 1)), rx: 1.5,
      }));
    };
    H.bars.replaceChildren();
    H.hits.replaceChildren();
    days.forEach((d, i) => {
      const x = cx(i);
      const today = i === days.length - 1 ? " today" : "";
      if (d.views > 0) bar(`bar views${today}`, x, barW, d.views);
      if (d.visitors > 0) bar(`bar visitors${today}`, x, Math.max(barW * 0.45, 1), d.visitors);
      // A full-height column per day carries its numbers as a tooltip.
      const hit = svg("rect", { x: r(padL + slot * i), y: padT, width: r(slot), height: r(plotH) });
      hit.dataset.date = d.date;
      const tip = svg("title", {});
      tip.textContent = `${d.date}: ${plural(d.views, "view")}, ${plural(d.visitors, "visitor")}, peak ${d.peak}`;
      hit.append(tip);
      H.hits.append(hit);
    });

    H.xLabels.replaceChildren();
    if (days.length) {
      const ticks = W < 360 ? [0, days.length - 1] : [0, Math.floor((days.length - 1) / 2), days.length - 1];
      for (const i of [...new Set(ticks)]) {
        const last = i === days.length - 1;
        const anchor = i === 0 ? "start" : last ? "end" : "middle";
        const tx = i === 0 ? padL : last ? W - padR : r(cx(i));
        const label = svg("text", { x: tx, y: H0 - 5, "text-anchor": anchor });
        label.textContent = last ? "today" : shortDate(days[i].date);
        H.xLabels.append(label);
      }
    }

    const summary =
      `Views and visitors of ${data.topic} per day from ${data.from} to ${data.to}: ` +
      `${plural(data.views, "view")}, ${plural(data.visitors, "visitor")}; ` +
      `today ${plural(days.length ? days[days.length - 1].views : 0, "view")}, peak ${data.peak}`;
    setText(historyTitle, summary);
    historyChart.setAttribute("aria-label", summary);
  }

  new ResizeObserver(() => drawHistory()).observe(historyChart);

  $("topic-form").addEventListener("submit", (e) => {
    e.preventDefault();
    selectTopic(topicInput.value);
  });

  // ----------------------------------------------------------------- embed

  setText(
    $("embed-snippet"),
    `<script async src="${location.origin}/hc.js"></script>\n` +
      `<span data-headcount></span> reading this page`,
  );

  // ------------------------------------------------------------ lifecycle

  let streams = [];

  function start() {
    openPrefix = prefixInput.value.trim();
    streams = [
      openStream("cluster", "/live/cluster", onCluster),
      openStream("series", "/live/total", onTotalSeries),
    ];
    openTopics();
    if (currentTopic) selectTopic(currentTopic);
  }

  function stop() {
    for (const s of streams) s.close();
    streams = [];
    if (topicsStream) { topicsStream.close(); topicsStream = null; }
    openTotal(false);
    if (topicSocket) { topicSocket.close(); topicSocket = null; }
    stopHistory();
  }

  // Close everything when the page is hidden for good or put in the back/forward
  // cache; reopen when it comes back from that cache.
  addEventListener("pagehide", stop);
  addEventListener("pageshow", (e) => { if (e.persisted) start(); });

  start();
  drawChart();
})();
