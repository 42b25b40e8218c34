/* InfraFabric operations dashboard.
 *
 * Plain ES2020, no dependencies, no build step. State arrives over one
 * EventSource (/api/events): a `snapshot` first, then incremental events that
 * are applied to a local copy; renders are coalesced with requestAnimationFrame.
 * The only timer is a 1 s ticker for countdowns and relative times.
 * Server data is only ever put in the page through textContent/attributes.
 */
"use strict";

(() => {
  const STATUSES = ["blocked", "available", "claimed", "completed", "failed", "cancelled"];
  const FEED_CAP = 200;
  const TAIL_CAP = 50;
  const TOKEN_KEY = "infrafabric.operatorToken";
  const SVGNS = "http://www.w3.org/2000/svg";

  // ---------------------------------------------------------------- state --
  const S = {
    bus: null,
    actions: false,
    tasks: new Map(),
    critical: [],
    swarms: new Map(),
    waiting: [],
    events: [], // oldest first, each with a local `_n` sequence number
    witness: { length: 0, head: "", tail: [], verify: null },
    synced: false,
  };
  let clockOffset = 0; // server clock minus local clock, in seconds
  let eventCounter = 0;
  let selected = null; // selected task id
  let verifyInFlight = false;
  let verifyError = null; // message when the verify request itself failed

  const serverNow = () => Date.now() / 1000 + clockOffset;

  // --------------------------------------------------------------- helpers --
  const $ = (sel, root = document) => root.querySelector(sel);

  /** Build an HTML element. Strings become text nodes, never markup. */
  function h(tag, props, ...kids) {
    const e = document.createElement(tag);
    setProps(e, props);
    appendKids(e, kids);
    return e;
  }
  /** Build an SVG element. */
  function sv(tag, props, ...kids) {
    const e = document.createElementNS(SVGNS, tag);
    setProps(e, props);
    appendKids(e, kids);
    return e;
  }
  function setProps(e, props) {
    if (!props) return;
    for (const [k, v] of Object.entries(props)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") e.setAttribute("class", v);
      else if (k === "text") e.textContent = String(v);
      else if (k.startsWith("on") && typeof v === "function") e.addEventListener(k.slice(2), v);
      // styles go through the CSSOM: the Content-Security-Policy refuses style attributes
      else if (k === "style" && typeof v === "object") for (const [p, pv] of Object.entries(v)) e.style.setProperty(p, pv);
      else e.setAttribute(k, v === true ? "" : String(v));
    }
  }
  function appendKids(e, kids) {
    for (const k of kids.flat(Infinity)) {
      if (k === null || k === undefined || k === false) continue;
      e.append(k instanceof Node ? k : String(k));
    }
  }
  /** Replace an element's children; like h(), null/undefined/false kids are left out. */
  function fill(e, ...kids) {
    e.replaceChildren();
    appendKids(e, kids);
  }
  function setText(e, text) {
    const t = String(text);
    if (e.textContent !== t) e.textContent = t;
  }
  function setAttr(e, name, value) {
    if (value === null || value === undefined || value === false) {
      if (e.hasAttribute(name)) e.removeAttribute(name);
    } else {
      const v = String(value);
      if (e.getAttribute(name) !== v) e.setAttribute(name, v);
    }
  }
  const pad2 = (n) => String(n).padStart(2, "0");
  function fmtClock(epochSeconds) {
    if (!isFinite(epochSeconds) || epochSeconds <= 0) return "—";
    const d = new Date(epochSeconds * 1000);
    return `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
  }
  function fmtDateTime(epochSeconds) {
    if (!isFinite(epochSeconds) || epochSeconds <= 0) return "";
    const d = new Date(epochSeconds * 1000);
    return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ${fmtClock(epochSeconds)}`;
  }
  /** Witness timestamps are integer epoch microseconds. */
  function fmtMicrosClock(ts) {
    if (typeof ts !== "number" || !isFinite(ts) || ts <= 0) return "—";
    const ms = Math.floor(ts / 1000);
    const d = new Date(ms);
    return `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}.${String(ms % 1000).padStart(3, "0")}`;
  }
  function fmtDuration(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m ${pad2(s % 60)}s`;
    if (s < 86400) return `${Math.floor(s / 3600)}h ${pad2(Math.floor((s % 3600) / 60))}m`;
    return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
  }
  function fmtAgo(epochSeconds) {
    const d = serverNow() - epochSeconds;
    if (d < 5) return "just now";
    return `${fmtDuration(d)} ago`;
  }
  /** Integer micro-dollars to "$1.23" (rounded to cents), without float money maths. */
  function fmtMoney(micros) {
    if (typeof micros !== "number" || !isFinite(micros)) return "—";
    const neg = micros < 0;
    let cents = Math.round(Math.abs(micros) / 10000);
    const dollars = Math.floor(cents / 100);
    cents -= dollars * 100;
    return `${neg ? "−" : ""}$${dollars.toLocaleString("en-US")}.${pad2(cents)}`;
  }
  /** "2.50" → 2500000: dollars typed by a human to integer micro-dollars, by string arithmetic. */
  function parseDollars(raw) {
    const s = String(raw).trim().replace(/^\$\s*/, "");
    if (s === "") return { ok: true, value: null };
    const m = /^(\d*)(?:\.(\d*))?$/.exec(s);
    if (!m || (m[1] === "" && (m[2] === undefined || m[2] === ""))) {
      return { ok: false, error: "Enter an amount in dollars, digits and at most one dot, e.g. 2.50" };
    }
    const frac = m[2] || "";
    if (frac.length > 6) return { ok: false, error: "At most 6 decimal places (one micro-dollar)" };
    const digits = ((m[1] || "0") + frac.padEnd(6, "0")).replace(/^0+(?=\d)/, "");
    if (digits.length > 15) return { ok: false, error: "That budget is too large" };
    return { ok: true, value: parseInt(digits, 10) };
  }
  const naturalCompare = new Intl.Collator("en", { numeric: true, sensitivity: "base" }).compare;
  const arr = (v) => (Array.isArray(v) ? v : []);
  const isFilled = (v) => v !== null && v !== undefined && v !== "";
  function shortHash(hash) {
    if (!hash) return "—";
    const s = String(hash);
    return s.length > 14 ? `${s.slice(0, 12)}…` : s;
  }
  function statusOf(task) {
    return task && STATUSES.includes(task.status) ? task.status : "blocked";
  }

  // ---------------------------------------------------------- render loop --
  const dirty = new Set();
  let rafId = 0;
  function invalidate(...parts) {
    for (const p of parts) dirty.add(p);
    if (!rafId) rafId = requestAnimationFrame(flush);
  }
  function flush() {
    rafId = 0;
    const d = new Set(dirty);
    dirty.clear();
    const safe = (name, fn) => {
      try {
        fn();
      } catch (err) {
        console.warn(`dashboard: rendering ${name} failed`, err);
      }
    };
    if (d.has("header")) safe("header", renderHeader);
    if (d.has("tasks")) {
      safe("counts", renderCounts);
      safe("graph", renderGraph);
      safe("table", renderTable);
    } else if (d.has("filter")) {
      safe("graph", renderGraph);
      safe("table", renderTable);
    }
    if (d.has("swarms") || d.has("tasks")) safe("swarms", renderSwarms);
    if (d.has("waiting")) safe("waiting", renderWaiting);
    if (d.has("feed")) safe("feed", renderFeed);
    if (d.has("witness")) safe("witness", renderWitness);
    if (d.has("verify")) safe("verify", renderVerify);
    if (d.has("dialog")) safe("dialog", syncDialog);
    tick();
  }

  // ------------------------------------------------------------ ingestion --
  function applySnapshot(v) {
    if (!v || typeof v !== "object") return;
    if (typeof v.now === "number" && isFinite(v.now)) clockOffset = v.now - Date.now() / 1000;
    S.bus = v.bus || null;
    S.actions = v.actions === true;
    S.tasks = new Map(Object.entries(v.tasks || {}).filter(([, t]) => t && typeof t === "object"));
    S.critical = arr(v.critical_path);
    S.swarms = new Map(Object.entries(v.swarms || {}).filter(([, s]) => s && typeof s === "object"));
    S.waiting = arr(v.waiting);
    S.events = arr(v.events).slice(-FEED_CAP).map((e) => ({ ...e, _n: ++eventCounter }));
    feedReset = true;
    const w = v.witness || {};
    S.witness = {
      length: typeof w.length === "number" ? w.length : 0,
      head: w.head || "",
      tail: arr(w.tail).slice(-TAIL_CAP),
      verify: w.verify || null,
    };
    S.synced = true;
    invalidate("header", "tasks", "swarms", "waiting", "feed", "witness", "verify", "dialog");
  }

  const handlers = {
    snapshot: applySnapshot,
    task(d) {
      if (!d || d.id === undefined) return;
      if (d.value) S.tasks.set(String(d.id), d.value);
      else S.tasks.delete(String(d.id));
      if (Array.isArray(d.critical_path)) S.critical = d.critical_path;
      invalidate("tasks", "dialog");
    },
    swarm(d) {
      if (!d || d.id === undefined) return;
      if (d.value) S.swarms.set(String(d.id), d.value);
      else S.swarms.delete(String(d.id));
      invalidate("swarms", "dialog");
    },
    waiting(d) {
      S.waiting = arr(d);
      invalidate("waiting");
    },
    event(d) {
      if (!d || typeof d !== "object") return;
      S.events.push({ ...d, _n: ++eventCounter });
      if (S.events.length > FEED_CAP) S.events.splice(0, S.events.length - FEED_CAP);
      invalidate("feed");
    },
    witness(d) {
      if (!d || typeof d !== "object") return;
      if (typeof d.length === "number") S.witness.length = d.length;
      if (d.head !== undefined) S.witness.head = d.head || "";
      const seen = new Set(S.witness.tail.map((e) => e.seq));
      for (const e of arr(d.entries)) if (e && !seen.has(e.seq)) S.witness.tail.push(e);
      S.witness.tail.sort((a, b) => a.seq - b.seq);
      if (S.witness.tail.length > TAIL_CAP) S.witness.tail.splice(0, S.witness.tail.length - TAIL_CAP);
      invalidate("witness");
    },
    verify(d) {
      S.witness.verify = d && typeof d === "object" ? d : null;
      verifyError = null;
      invalidate("verify");
    },
    bus(d) {
      S.bus = d && typeof d === "object" ? d : null;
      invalidate("header");
    },
  };

  // ----------------------------------------------------------- connection --
  let es = null;
  let retryTimer = 0;
  let retryDelay = 1000;
  let everConnected = false;

  function setConn(state) {
    const pill = $("#conn");
    setAttr(pill, "data-state", state);
    setText(pill, state === "live" ? "live" : everConnected ? "reconnecting…" : "connecting…");
    pill.title = state === "live" ? "Receiving live updates from the server" : "Waiting for the server; data shown may be stale";
    document.body.classList.toggle("stale", state !== "live" && everConnected);
  }

  function connect() {
    clearTimeout(retryTimer);
    if (es) es.close();
    es = new EventSource("/api/events");
    es.onerror = () => {
      setConn("reconnecting");
      // The browser retries by itself unless the stream failed for good
      // (HTTP error, wrong content type): then start a new one, with backoff.
      if (es.readyState === EventSource.CLOSED) {
        retryTimer = setTimeout(connect, retryDelay);
        retryDelay = Math.min(retryDelay * 2, 15000);
      }
    };
    for (const name of Object.keys(handlers)) {
      es.addEventListener(name, (ev) => {
        let data;
        try {
          data = JSON.parse(ev.data);
        } catch (err) {
          console.warn(`dashboard: bad JSON in ${name} event`, err);
          return;
        }
        if (name === "snapshot") {
          everConnected = true;
          retryDelay = 1000;
        }
        if (everConnected) setConn("live");
        try {
          handlers[name](data);
        } catch (err) {
          console.warn(`dashboard: could not apply ${name} event`, err);
        }
      });
    }
  }

  // --------------------------------------------------------------- header --
  function renderHeader() {
    const bus = S.bus || {};
    setText($("#bus-url"), bus.url || "—");
    setText($("#bus-namespace"), bus.namespace || "—");
    const connected = bus.connected === true ? "true" : bus.connected === false ? "false" : "unknown";
    setAttr($("#bus"), "data-connected", connected);
    setText($("#bus-state"), connected === "false" ? "bus disconnected" : "");
    $("#bus").title = connected === "true" ? "Bus connected" : connected === "false" ? "Bus disconnected: the view may be stale" : "Bus state unknown";
  }

  function renderCounts() {
    const counts = Object.fromEntries(STATUSES.map((s) => [s, 0]));
    for (const t of S.tasks.values()) counts[statusOf(t)] += 1;
    for (const li of document.querySelectorAll("#counts li[data-status]")) {
      const n = counts[li.dataset.status] || 0;
      setText(li.querySelector(".n"), n);
      setAttr(li, "data-count", n);
      li.classList.toggle("zero", n === 0);
    }
  }

  // -------------------------------------------------------------- filters --
  const filterInput = $("#filter");
  const statusFilter = $("#status-filter");

  function taskMatches(t) {
    const st = statusFilter.value;
    if (st && st !== "all" && statusOf(t) !== st) return false;
    const q = filterInput.value.trim().toLowerCase();
    if (!q) return true;
    const hay = [t.id, t.title, t.owner, t.section, ...arr(t.capabilities)]
      .filter(isFilled)
      .join("\n")
      .toLowerCase();
    return q.split(/\s+/).every((word) => hay.includes(word));
  }

  function criticalSets() {
    const nodes = new Set(S.critical.map(String));
    const edges = new Set();
    for (let i = 1; i < S.critical.length; i++) {
      edges.add(`${S.critical[i - 1]}\u0000${S.critical[i]}`);
      edges.add(`${S.critical[i]}\u0000${S.critical[i - 1]}`);
    }
    return { nodes, edges };
  }

  // ---------------------------------------------------------------- graph --
  const NODE_H = 22;
  const ROW_H = 30;
  const COL_GAP = 46;
  const PAD_X = 22;
  const PAD_TOP = 26;
  const BAND_GAP = 30;

  let graphSig = "";
  let graphEls = { nodes: new Map(), edges: [] };

  /** Dependency depth per task: Kahn's algorithm; cycle members get a depth without recursion. */
  function computeDepths(tasks) {
    const ids = [...tasks.keys()];
    const deps = new Map();
    const children = new Map(ids.map((id) => [id, []]));
    const indeg = new Map();
    for (const id of ids) {
      const ds = [...new Set(arr(tasks.get(id).dependencies).map(String))].filter((d) => tasks.has(d) && d !== id);
      deps.set(id, ds);
      indeg.set(id, ds.length);
      for (const d of ds) children.get(d).push(id);
    }
    const depth = new Map();
    const queue = ids.filter((id) => indeg.get(id) === 0);
    for (const id of queue) depth.set(id, 0);
    for (let qi = 0; qi < queue.length; qi++) {
      const u = queue[qi];
      for (const c of children.get(u)) {
        depth.set(c, Math.max(depth.get(c) || 0, depth.get(u) + 1));
        indeg.set(c, indeg.get(c) - 1);
        if (indeg.get(c) === 0) queue.push(c);
      }
    }
    const inCycle = new Set();
    if (queue.length < ids.length) {
      // What is left sits on or behind a cycle: place it one past its placed deps.
      const rest = ids.filter((id) => indeg.get(id) > 0).sort(naturalCompare);
      const done = new Set(queue);
      for (const id of rest) {
        let dd = -1;
        for (const d of deps.get(id)) if (done.has(d)) dd = Math.max(dd, depth.get(d));
        depth.set(id, Math.max(depth.get(id) || 0, dd + 1));
        done.add(id);
        inCycle.add(id);
      }
    }
    return { depth, deps, inCycle };
  }

  function layoutGraph() {
    const { depth, deps, inCycle } = computeDepths(S.tasks);
    const ids = [...S.tasks.keys()].sort(naturalCompare);
    const maxIdLen = ids.reduce((m, id) => Math.max(m, id.length), 4);
    const nodeW = Math.max(70, Math.min(150, Math.round(maxIdLen * 6.9 + 22)));
    const colW = nodeW + COL_GAP;
    const maxDepth = ids.reduce((m, id) => Math.max(m, depth.get(id) || 0), 0);

    const pos = new Map(); // id -> {x, y}
    const bands = [];
    let y0 = PAD_TOP;
    for (const band of ["critical", "filler"]) {
      const members = ids.filter((id) => (S.tasks.get(id).kind === "filler" ? "filler" : "critical") === band);
      if (!members.length) continue;
      const cols = [];
      for (const id of members) {
        const d = depth.get(id) || 0;
        (cols[d] = cols[d] || []).push(id);
      }
      const slot = new Map();
      let maxSlot = -1;
      for (let d = 0; d <= maxDepth; d++) {
        const col = cols[d] || [];
        // barycenter of the dependencies already placed in this band
        const bary = new Map();
        col.forEach((id, i) => {
          const ys = deps.get(id).filter((x) => slot.has(x)).map((x) => slot.get(x));
          bary.set(id, ys.length ? ys.reduce((a, b) => a + b, 0) / ys.length : null);
        });
        const withB = col.filter((id) => bary.get(id) !== null).sort((a, b) => bary.get(a) - bary.get(b) || naturalCompare(a, b));
        const without = col.filter((id) => bary.get(id) === null);
        let prev = -1;
        for (const id of withB) {
          const s = Math.max(prev + 1, Math.round(bary.get(id)));
          slot.set(id, s);
          prev = s;
        }
        for (const id of without) {
          slot.set(id, prev + 1);
          prev += 1;
        }
        maxSlot = Math.max(maxSlot, prev);
      }
      for (const id of members) {
        pos.set(id, { x: PAD_X + (depth.get(id) || 0) * colW, y: y0 + slot.get(id) * ROW_H });
      }
      const hgt = (maxSlot + 1) * ROW_H;
      bands.push({ name: band, y: y0, h: hgt, count: members.length });
      y0 += hgt + BAND_GAP;
    }
    const width = Math.max(PAD_X * 2 + (maxDepth + 1) * colW - COL_GAP, 200);
    const height = Math.max(y0 - BAND_GAP + 8, 60);
    return { pos, deps, depth, inCycle, nodeW, colW, maxDepth, bands, width, height };
  }

  function edgePath(a, b, nodeW) {
    const sx = a.x + nodeW;
    const sy = a.y + NODE_H / 2;
    const tx = b.x - 3;
    const ty = b.y + NODE_H / 2;
    if (tx > sx) {
      const dx = Math.max(18, (tx - sx) / 2);
      return `M${sx},${sy} C${sx + dx},${sy} ${tx - dx},${ty} ${tx},${ty}`;
    }
    // a back edge (only on cycles) or same column: loop underneath
    const drop = Math.max(sy, ty) + ROW_H * 0.8;
    return `M${sx},${sy} C${sx + 30},${drop} ${tx - 18},${drop} ${tx},${ty}`;
  }

  function buildGraph() {
    const svg = $("#graph");
    const L = layoutGraph();
    svg.replaceChildren();
    svg.setAttribute("width", L.width);
    svg.setAttribute("height", L.height);
    svg.setAttribute("viewBox", `0 0 ${L.width} ${L.height}`);

    const defs = sv("defs");
    for (const [id, cls] of [["arrow", "arrow"], ["arrow-crit", "arrow crit"], ["arrow-hl", "arrow hl"]]) {
      defs.append(
        sv("marker", { id, viewBox: "0 0 8 8", refX: 7, refY: 4, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse", markerUnits: "userSpaceOnUse" },
          sv("path", { d: "M0,0.5 L8,4 L0,7.5 z", class: cls }))
      );
    }
    svg.append(defs);

    const gBands = sv("g", { class: "bands" });
    for (let d = 0; d <= L.maxDepth; d++) {
      gBands.append(sv("text", { class: "layer-label", x: PAD_X + d * L.colW + 2, y: 12, text: `depth ${d}` }));
    }
    for (const b of L.bands) {
      if (b.name === "filler") {
        gBands.append(sv("line", { class: "band-sep", x1: 0, x2: L.width, y1: b.y - BAND_GAP / 2 - 2, y2: b.y - BAND_GAP / 2 - 2 }));
        gBands.append(sv("text", { class: "band-label", x: L.width - 6, y: b.y - BAND_GAP / 2 + 10, "text-anchor": "end", text: `filler · ${b.count}` }));
      }
    }
    svg.append(gBands);

    const gEdges = sv("g", { class: "edges" });
    const edges = [];
    for (const [id, ds] of L.deps) {
      for (const d of ds) {
        const a = L.pos.get(d);
        const b = L.pos.get(id);
        if (!a || !b) continue;
        const p = sv("path", { class: "edge", d: edgePath(a, b, L.nodeW), "data-from": d, "data-to": id, "marker-end": "url(#arrow)" });
        gEdges.append(p);
        edges.push({ el: p, from: d, to: id });
      }
    }
    svg.append(gEdges);

    const gNodes = sv("g", { class: "nodes" });
    const nodes = new Map();
    const maxChars = Math.floor((L.nodeW - 14) / 6.9);
    for (const [id, p] of L.pos) {
      const label = id.length > maxChars ? `${id.slice(0, maxChars - 1)}…` : id;
      const title = sv("title");
      const g = sv("g", { class: "node", "data-node": id, transform: `translate(${p.x},${p.y})`, "data-cycle": L.inCycle.has(id) ? "true" : null },
        title,
        sv("rect", { class: "halo", x: -3, y: -3, width: L.nodeW + 6, height: NODE_H + 6, rx: 7 }),
        sv("rect", { class: "box", width: L.nodeW, height: NODE_H, rx: 5 }),
        sv("text", { class: "label", x: L.nodeW / 2, y: NODE_H / 2 + 3.8, "text-anchor": "middle", text: label }));
      gNodes.append(g);
      nodes.set(id, { g, title });
    }
    svg.append(gNodes);
    graphEls = { nodes, edges };
  }

  function renderGraph() {
    const sig = [...S.tasks.values()]
      .map((t) => `${t.id}|${t.kind === "filler" ? "f" : "c"}|${arr(t.dependencies).join(",")}`)
      .sort()
      .join(";");
    if (sig !== graphSig) {
      graphSig = sig;
      buildGraph();
    }
    const crit = criticalSets();
    const dimmed = new Set();
    for (const [id, { g, title }] of graphEls.nodes) {
      const t = S.tasks.get(id);
      if (!t) continue;
      const status = statusOf(t);
      setAttr(g, "data-status", status);
      const isCrit = crit.nodes.has(id);
      setAttr(g, "data-critical", isCrit ? "true" : null);
      g.classList.toggle("crit", isCrit);
      const match = taskMatches(t);
      g.classList.toggle("dim", !match);
      setAttr(g, "data-dim", match ? null : "true");
      if (!match) dimmed.add(id);
      g.classList.toggle("selected", selected === id);
      const lines = [`${id} — ${t.title || ""}`, `status: ${status}`, `owner: ${t.owner || "—"}`];
      if (isCrit) lines.push("on the critical path");
      if (g.hasAttribute("data-cycle")) lines.push("part of (or behind) a dependency cycle");
      setText(title, lines.join("\n"));
    }
    for (const e of graphEls.edges) {
      const isCrit = crit.edges.has(`${e.from}\u0000${e.to}`);
      e.el.classList.toggle("crit", isCrit);
      e.el.classList.toggle("dim", dimmed.has(e.from) || dimmed.has(e.to));
      setAttr(e.el, "marker-end", isCrit ? "url(#arrow-crit)" : "url(#arrow)");
    }
  }

  function highlightEdges(id, on) {
    for (const e of graphEls.edges) {
      if (e.from === id || e.to === id) {
        e.el.classList.toggle("hl", on);
        if (on) e.el.setAttribute("marker-end", "url(#arrow-hl)");
      }
    }
    if (!on) renderGraph();
  }

  // ---------------------------------------------------------------- table --
  const rowCache = new Map(); // id -> {tr, sig}
  const groupRows = {};

  function chip(text, attrs) {
    return h("span", { class: "chip", ...attrs }, text);
  }
  function taskChip(id) {
    const t = S.tasks.get(id);
    return h("button", {
      type: "button",
      class: "chip task-chip",
      "data-goto": id,
      "data-status": t ? statusOf(t) : "missing",
      title: t ? `${id}: ${t.title || ""} (${statusOf(t)})` : `${id} is not on the board`,
      text: id,
    });
  }

  function reopenButton(id) {
    return h("button", { type: "button", class: "reopen", "data-task": id, title: `Give ${id} a fresh set of attempts`, text: "Reopen…" });
  }

  function buildRow(id, t, isCrit) {
    const status = statusOf(t);
    const tr = h("tr", { "data-task": id, "data-status": status, "data-kind": t.kind || "critical", "data-critical": isCrit ? "true" : null, class: isCrit ? "crit" : null });
    const leaseTd = h("td", { class: "lease num" });
    if (status === "claimed" && typeof t.lease_until === "number") {
      leaseTd.setAttribute("data-lease-until", t.lease_until);
      leaseTd.title = `lease until ${fmtDateTime(t.lease_until)}`;
    } else leaseTd.textContent = "—";
    const attempts = Number(t.attempts) || 0;
    const max = Number(t.max_attempts) || 0;
    tr.append(
      h("td", { class: "id" }, isCrit ? h("span", { class: "crit-mark", title: "on the critical path", "aria-label": "critical path" }, "◆") : null, h("code", { text: id })),
      h("td", { class: "title", title: t.title || "" }, h("span", { class: "title-text", text: t.title || "" }), t.error ? h("span", { class: "err", title: String(t.error), text: String(t.error) }) : null),
      h("td", { class: "status" }, h("span", { class: "badge", "data-status": status, text: status }), status === "failed" ? reopenButton(id) : null),
      h("td", { class: "kind", text: t.kind || "critical" }),
      h("td", { class: "owner", text: t.owner || "—" }),
      leaseTd,
      h("td", { class: `num attempts${max && attempts >= max ? " exhausted" : ""}`, text: `${attempts}/${max || "—"}` }),
      h("td", { class: "chips" }, arr(t.capabilities).map((c) => chip(c, { class: "chip cap" }))),
      h("td", { class: "chips" }, arr(t.dependencies).map((d) => taskChip(String(d))))
    );
    return tr;
  }

  function groupRow(kind) {
    if (!groupRows[kind]) {
      const th = h("th", { colspan: 9, scope: "rowgroup" });
      groupRows[kind] = { tr: h("tr", { class: "group" }, th), th };
    }
    return groupRows[kind];
  }

  function renderTable() {
    const crit = criticalSets();
    const bodies = { critical: $("#tasks-critical"), filler: $("#tasks-filler") };
    const order = { critical: [], filler: [] };
    const ids = [...S.tasks.keys()].sort(naturalCompare);
    const live = new Set();
    let shown = 0;
    const shownBy = { critical: 0, filler: 0 };
    for (const id of ids) {
      const t = S.tasks.get(id);
      const isCrit = crit.nodes.has(id);
      const depSig = arr(t.dependencies).map((d) => statusOf(S.tasks.get(String(d))) + (S.tasks.has(String(d)) ? "" : "?")).join(",");
      const sig = JSON.stringify([t, isCrit, depSig]);
      let entry = rowCache.get(id);
      if (!entry || entry.sig !== sig) {
        const tr = buildRow(id, t, isCrit);
        if (entry) entry.tr.replaceWith(tr);
        entry = { tr, sig };
        rowCache.set(id, entry);
      }
      const match = taskMatches(t);
      entry.tr.hidden = !match;
      entry.tr.classList.toggle("selected", selected === id);
      if (match) {
        shown += 1;
      }
      const kind = t.kind === "filler" ? "filler" : "critical";
      if (match) shownBy[kind] += 1;
      order[kind].push(entry.tr);
      live.add(id);
    }
    for (const [id, entry] of rowCache) {
      if (!live.has(id)) {
        entry.tr.remove();
        rowCache.delete(id);
      }
    }
    for (const kind of ["critical", "filler"]) {
      const body = bodies[kind];
      const g = groupRow(kind);
      const total = order[kind].length;
      const label = kind === "critical" ? "Critical-kind tasks" : "Filler tasks";
      setText(g.th, total === 0 ? `${label} · none` : shownBy[kind] === total ? `${label} · ${total}` : `${label} · ${shownBy[kind]} of ${total} match`);
      const want = [g.tr, ...order[kind]];
      const have = body.children;
      let same = have.length === want.length;
      for (let i = 0; same && i < want.length; i++) same = have[i] === want[i];
      if (!same) body.replaceChildren(...want);
    }
    const filtering = filterInput.value.trim() !== "" || statusFilter.value !== "all";
    setText($("#match-count"), filtering ? `${shown} of ${S.tasks.size} match` : `${S.tasks.size} tasks`);
  }

  function selectTask(id, from) {
    selected = selected === id && from !== "chip" ? null : id;
    renderGraph();
    renderTable();
    if (!selected) return;
    if (from !== "table") {
      const entry = rowCache.get(id);
      if (entry && !entry.tr.hidden && $("#board-body").dataset.view !== "graph") entry.tr.scrollIntoView({ block: "nearest", behavior: "smooth" });
    }
    if (from !== "graph") {
      const n = graphEls.nodes.get(id);
      if (n && $("#board-body").dataset.view !== "table") scrollGraphTo(n.g);
    }
  }
  function scrollGraphTo(g) {
    const wrap = $("#graph-wrap");
    const box = g.getBBox();
    const m = /translate\(([-\d.]+),([-\d.]+)\)/.exec(g.getAttribute("transform") || "");
    if (!m) return;
    const x = Number(m[1]);
    const y = Number(m[2]);
    wrap.scrollTo({ left: Math.max(0, x - wrap.clientWidth / 2 + box.width / 2), top: Math.max(0, y - wrap.clientHeight / 2), behavior: "smooth" });
  }

  // --------------------------------------------------------------- swarms --
  const swarmCache = new Map(); // id -> {el, sig}

  function spendChart(swarm) {
    const W = 120;
    const H = 36;
    const pts = arr(swarm.spend).filter((p) => Array.isArray(p) && p.length >= 2 && isFinite(p[0]) && isFinite(p[1]));
    const svg = sv("svg", { class: "spend-chart", width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img" });
    const limit = swarm.budget && typeof swarm.budget.limit_micros === "number" ? swarm.budget.limit_micros : 0;
    if (pts.length < 2) {
      svg.setAttribute("aria-label", "no spend recorded yet");
      svg.append(sv("title", { text: "No spend recorded yet" }), sv("line", { class: "spend-base", x1: 0, x2: W, y1: H - 1.5, y2: H - 1.5 }), sv("text", { class: "spend-empty", x: W / 2, y: H / 2 + 3, "text-anchor": "middle", text: "no spend yet" }));
      return svg;
    }
    const t0 = pts[0][0];
    const t1 = pts[pts.length - 1][0];
    const maxV = Math.max(limit, ...pts.map((p) => p[1]), 1);
    const x = (t) => (t1 > t0 ? ((t - t0) / (t1 - t0)) * (W - 2) + 1 : W / 2);
    const y = (v) => H - 2 - (v / maxV) * (H - 6);
    const line = pts.map((p, i) => `${i ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ");
    const last = pts[pts.length - 1];
    const over = limit > 0 && last[1] >= limit;
    svg.setAttribute("aria-label", `spend over time, now ${fmtMoney(last[1])}`);
    svg.append(
      sv("title", { text: `Spend ${fmtMoney(pts[0][1])} → ${fmtMoney(last[1])} between ${fmtClock(t0)} and ${fmtClock(t1)}${limit ? `; limit ${fmtMoney(limit)}` : ""}` }),
      sv("path", { class: "spend-area", d: `${line} L${x(t1).toFixed(1)},${H - 2} L${x(t0).toFixed(1)},${H - 2} Z` }),
      limit > 0 ? sv("line", { class: "spend-limit", x1: 0, x2: W, y1: y(limit), y2: y(limit) }) : null,
      sv("path", { class: `spend-line${over ? " over" : ""}`, d: line }),
      sv("circle", { class: `spend-dot${over ? " over" : ""}`, cx: x(last[0]), cy: y(last[1]), r: 2.2 })
    );
    return svg;
  }

  function buildSwarm(s) {
    const id = String(s.id);
    const b = s.breaker && typeof s.breaker === "object" ? s.breaker : null;
    const bstate = b ? String(b.state || "none") : "none";
    const lv = s.live && typeof s.live === "object" ? s.live : null;
    const isLive = Boolean(lv && lv.live);
    const liveTitle = isLive ? arr(lv.because).map(String).join("; ")
      : `no agent connected, waiting for work or holding a claim${lv && lv.last_seen ? ` · last seen ${fmtDateTime(lv.last_seen)}` : ""}`;
    const card = h("div", { class: "swarm", "data-swarm": id, "data-breaker": bstate, "data-live": isLive ? "true" : "false" });

    const head = h("div", { class: "swarm-head" },
      h("h3", { text: id }),
      h("span", { class: "live", "data-live": isLive ? "true" : "false", title: liveTitle, text: isLive ? "live" : "dead" }),
      s.registered === false ? h("span", { class: "tag warn", title: "Not registered with the governor", text: "unregistered" }) : null,
      h("span", { class: "breaker", "data-state": bstate, title: b ? `breaker ${bstate}${b.changed_by ? ` · set by ${b.changed_by}` : ""}${b.changed_at ? ` at ${fmtDateTime(b.changed_at)}` : ""}` : "no breaker record", text: bstate === "none" ? "no breaker" : bstate.replace("_", "-") }));
    card.append(head);

    if (b && (bstate !== "closed" || b.reason)) {
      card.append(h("div", { class: "breaker-reason", "data-state": bstate },
        h("span", { text: b.reason || (bstate === "open" ? "open" : "") }),
        b.changed_at ? h("span", { class: "muted" }, " · ", h("time", { "data-at": b.changed_at, title: fmtDateTime(b.changed_at) })) : null));
    }

    card.append(h("div", { class: "chips caps" }, arr(s.capabilities).length ? arr(s.capabilities).map((c) => chip(c, { class: "chip cap" })) : h("span", { class: "muted", text: "no capabilities" })));

    const budget = s.budget && typeof s.budget === "object" ? s.budget : null;
    const budgetBox = h("div", { class: "budget" });
    if (budget && typeof budget.limit_micros === "number") {
      const limit = budget.limit_micros;
      const spent = Number(budget.spent_micros) || 0;
      const reserved = Number(budget.reserved_micros) || 0;
      const remaining = limit - spent - reserved;
      const frac = limit > 0 ? Math.max(0, Math.min(1, remaining / limit)) : 0;
      const resFrac = limit > 0 ? Math.max(0, Math.min(1 - frac, reserved / limit)) : 0;
      const low = frac < 0.1;
      const pct = (frac * 100).toFixed(1);
      budgetBox.append(
        h("div", { class: "budget-track", role: "meter", "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": pct, "aria-label": "budget left", title: `${pct}% left · spent ${fmtMoney(spent)}${reserved ? ` · reserved ${fmtMoney(reserved)}` : ""}` },
          h("div", { class: `budget-bar${low ? " low" : ""}`, "data-low": low ? "true" : null, style: { width: `${pct}%` } }),
          resFrac > 0 ? h("div", { class: "budget-reserved", style: { left: `${pct}%`, width: `${(resFrac * 100).toFixed(1)}%` } }) : null),
        h("div", { class: `budget-text${low ? " low" : ""}` }, `${fmtMoney(remaining)} of ${fmtMoney(limit)} left`, reserved ? h("span", { class: "muted", text: ` · ${fmtMoney(reserved)} reserved` }) : null)
      );
    } else {
      budgetBox.append(h("div", { class: "budget-text muted", text: "no budget on the bus" }));
    }
    card.append(h("div", { class: "swarm-money" }, budgetBox, spendChart(s)));

    const slo = s.slo && typeof s.slo === "object" ? s.slo : null;
    const compliant = slo && slo.compliant === true ? "true" : slo && slo.compliant === false ? "false" : "unknown";
    const sloTitle = slo && slo.detail && Object.keys(slo.detail).length ? JSON.stringify(slo.detail) : "no detail";
    const rep = typeof s.reputation === "number" ? s.reputation.toFixed(2) : "—";
    card.append(h("div", { class: "swarm-stats" },
      h("span", { class: "reputation", title: "reputation" }, h("span", { class: "muted", text: "rep " }), h("b", { text: rep })),
      typeof s.cost_per_hour_micros === "number" ? h("span", { class: "rate", title: "cost per hour" }, h("b", { text: fmtMoney(s.cost_per_hour_micros) }), h("span", { class: "muted", text: "/h" })) : null,
      h("span", { class: "slo", "data-compliant": compliant, title: `SLO detail: ${sloTitle}` }, h("span", { class: "muted", text: "SLO " }), h("b", { text: compliant === "true" ? "✓ yes" : compliant === "false" ? "✗ no" : "? unknown" }))));

    const holding = arr(s.holding).map(String);
    card.append(h("div", { class: "holding" }, h("span", { class: "muted", text: holding.length ? `holds ${holding.length}: ` : "holds no tasks" }), holding.map(taskChip)));
    return card;
  }

  function renderSwarms() {
    const box = $("#swarms");
    const ids = [...S.swarms.keys()].sort(naturalCompare);
    const want = [];
    for (const id of ids) {
      const s = S.swarms.get(id);
      const holdSig = arr(s.holding).map((t) => statusOf(S.tasks.get(String(t)))).join(",");
      const sig = JSON.stringify([s, holdSig]);
      let entry = swarmCache.get(id);
      if (!entry || entry.sig !== sig) {
        entry = { el: buildSwarm({ ...s, id: s.id ?? id }), sig };
        swarmCache.set(id, entry);
      }
      want.push(entry.el);
    }
    for (const id of [...swarmCache.keys()]) if (!S.swarms.has(id)) swarmCache.delete(id);
    const have = box.children;
    let same = have.length === want.length;
    for (let i = 0; same && i < want.length; i++) same = have[i] === want[i];
    if (!same) box.replaceChildren(...want);
    if (!want.length) box.replaceChildren(h("p", { class: "empty", text: "No swarms on the bus yet." }));
    setText($("#swarms-count"), ids.length);
  }

  // -------------------------------------------------------------- waiting --
  function renderWaiting() {
    const ul = $("#waiting");
    const items = S.waiting.filter((w) => w && typeof w === "object");
    const kindOrder = { unattended: 0, breaker: 1, failed: 2, escalation: 3, blocker: 4 };
    const sorted = items.slice().sort((a, b) => (kindOrder[a.kind] ?? 9) - (kindOrder[b.kind] ?? 9) || (Number(b.at) || 0) - (Number(a.at) || 0));
    ul.replaceChildren(...sorted.map((w) => {
      const kind = String(w.kind || "other");
      const at = Number(w.at) || 0;
      const subject = h("div", { class: "w-subject" },
        isFilled(w.swarm) ? h("span", { class: "w-swarm", text: String(w.swarm) }) : null,
        isFilled(w.swarm) && isFilled(w.task) ? h("span", { class: "muted", text: " · " }) : null,
        isFilled(w.task) ? taskChip(String(w.task)) : null,
        kind === "unattended" ? arr(w.tasks).map((t) => taskChip(String(t))) : null);
      return h("li", { "data-kind": kind, "data-swarm": isFilled(w.swarm) ? String(w.swarm) : null, "data-task": isFilled(w.task) ? String(w.task) : null },
        h("span", { class: "kind-tag", "data-kind": kind, text: kind }),
        h("div", { class: "w-main" }, subject, h("div", { class: "w-reason", text: w.reason || "" })),
        h("div", { class: "w-side" },
          at > 0 ? h("time", { "data-at": at, title: fmtDateTime(at) }) : h("time", { class: "muted", text: "—", title: "time unknown" }),
          kind === "breaker" && isFilled(w.swarm) ? h("button", { type: "button", class: "reset", "data-swarm": String(w.swarm), text: "Reset breaker…" }) : null,
          kind === "failed" && isFilled(w.task) ? reopenButton(String(w.task)) : null));
    }));
    $("#waiting-empty").hidden = sorted.length > 0;
    setText($("#waiting-count"), sorted.length);
    $("#waiting-count").classList.toggle("hot", sorted.length > 0);
  }

  // ----------------------------------------------------------------- feed --
  let feedReset = true;
  let feedLast = 0; // _n of the newest rendered item

  function feedItem(e) {
    const at = Number(e.at) || 0;
    return h("li", { "data-kind": e.kind || null, "data-status": e.status || null, "data-task": isFilled(e.task) ? e.task : null, "data-swarm": isFilled(e.swarm) ? e.swarm : null },
      h("time", { title: fmtDateTime(at), text: fmtClock(at) }),
      h("span", { class: "feed-dot", "data-status": e.status || null, "aria-hidden": "true" }),
      h("span", { class: "text", text: e.text || "" }));
  }

  function renderFeed() {
    const ul = $("#events");
    if (feedReset) {
      feedReset = false;
      ul.replaceChildren(...S.events.slice().reverse().map(feedItem));
    } else {
      const fresh = S.events.filter((e) => e._n > feedLast);
      if (fresh.length) for (const li of ul.querySelectorAll("li.empty")) li.remove();
      if (fresh.length >= FEED_CAP) ul.replaceChildren(...S.events.slice().reverse().map(feedItem));
      else for (const e of fresh) ul.prepend(feedItem(e));
      while (ul.children.length > FEED_CAP) ul.lastElementChild.remove();
    }
    feedLast = S.events.length ? S.events[S.events.length - 1]._n : feedLast;
    if (!S.events.length) ul.replaceChildren(h("li", { class: "empty", text: "No events yet." }));
  }

  // -------------------------------------------------------------- witness --
  function renderWitness() {
    const w = S.witness;
    setText($("#witness-length"), String(w.length));
    setAttr($("#witness-length"), "data-value", w.length);
    const head = $("#witness-head");
    setText(head, shortHash(w.head));
    head.title = w.head ? `head hash ${w.head}` : "no entries";
    const rows = w.tail.slice().reverse().map((e) =>
      h("tr", { "data-seq": e.seq, "data-severity": e.severity || null, title: e.hash ? `hash ${e.hash}` : null },
        h("td", { class: "num", text: e.seq }),
        h("td", { class: "time", title: fmtDateTime(Math.floor(Number(e.ts) / 1e6)), text: fmtMicrosClock(Number(e.ts)) }),
        h("td", { text: e.component || "" }),
        h("td", { class: "op", text: e.operation || "" }),
        h("td", { text: e.actor || "" })));
    const body = $("#witness-tail tbody");
    if (!rows.length) body.replaceChildren(h("tr", { class: "empty" }, h("td", { colspan: 5, text: "No witness entries yet." })));
    else body.replaceChildren(...rows);
  }

  function renderVerify() {
    const el = $("#verify-result");
    const btn = $("#verify-btn");
    const v = S.witness.verify;
    const running = verifyInFlight || (v && v.running === true);
    // verifying reads the whole chain: it takes the operator token, as every costly action does
    const tokenField = $("#verify-token");
    tokenField.hidden = !S.actions || Boolean(loadToken());
    btn.disabled = running || !S.actions;
    btn.title = S.actions ? "" : "read-only dashboard: verify with `ifctl witness verify`";
    setText(btn, running ? "Verifying…" : "Verify now");
    setAttr(el, "data-running", running ? "true" : null);
    if (running) {
      setAttr(el, "data-ok", null);
      setText(el, "verifying the whole chain…");
      return;
    }
    if (verifyError) {
      setAttr(el, "data-ok", "false");
      setText(el, `✗ could not verify: ${verifyError}`);
      return;
    }
    if (!v || typeof v.ok !== "boolean") {
      setAttr(el, "data-ok", null);
      setText(el, "not verified yet");
      return;
    }
    setAttr(el, "data-ok", v.ok ? "true" : "false");
    const when = v.at ? ` at ${fmtClock(Number(v.at))}` : "";
    if (v.ok) {
      const n = typeof v.entries === "number" ? v.entries : S.witness.length;
      setText(el, `✓ ${n} ${n === 1 ? "entry" : "entries"} verified${when}`);
    } else if (v.first_bad_seq !== null && v.first_bad_seq !== undefined) {
      setText(el, `✗ broken at seq ${v.first_bad_seq}: ${v.problem || "chain does not verify"}`);
    } else {
      setText(el, `✗ chain does not verify: ${v.problem || "unknown problem"}`);
    }
    el.title = v.at ? `checked ${fmtDateTime(Number(v.at))}` : "";
  }

  async function verifyNow() {
    if (verifyInFlight) return;
    const token = loadToken() || $("#verify-token").value.trim();
    if (!token) {
      verifyError = "enter the operator token first";
      renderVerify();
      return;
    }
    verifyInFlight = true;
    verifyError = null;
    renderVerify();
    try {
      const res = await fetch("/api/witness/verify", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json", Authorization: `Bearer ${token}` },
        body: "{}",
      });
      if (res.ok) saveToken(token);
      else if (res.status === 401) saveToken("");
      let body = null;
      try {
        body = await res.json();
      } catch (_) {
        body = null;
      }
      if (!res.ok || (body && typeof body.error === "string")) {
        verifyError = (body && body.error) || `HTTP ${res.status}`;
      } else if (body && typeof body === "object") {
        const v = body.verify && typeof body.verify === "object" ? body.verify : body;
        if (typeof v.ok === "boolean" && ("entries" in v || "problem" in v || "first_bad_seq" in v)) {
          const cur = S.witness.verify;
          if (!cur || cur.running || !(Number(cur.at) > Number(v.at))) S.witness.verify = v;
        }
      }
    } catch (err) {
      verifyError = `the server did not answer (${err && err.message ? err.message : err})`;
    } finally {
      verifyInFlight = false;
      renderVerify();
    }
  }

  // ------------------------------------------- confirm dialog (reset / reopen) --
  // One dialog, two modes: "breaker" (reset a swarm's breaker) and "task"
  // (reopen a failed task). Elements carrying data-mode-only show in their mode.
  const dialog = $("#confirm-dialog");
  const confirmInput = $("#confirm-input");
  const tokenInput = $("#token-input");
  const budgetInput = $("#budget-input");
  const reasonInput = $("#reason-input");
  const confirmBtn = $("#confirm-btn");
  const confirmResult = $("#confirm-result");
  const REASON_MAX = 500;
  let dialogMode = "breaker";
  let dialogId = null; // the swarm (breaker mode) or task (task mode) the dialog acts on
  let actionInFlight = false;
  let actionDone = false; // the action succeeded; the dialog closes shortly
  let closeTimer = 0;

  function loadToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || "";
    } catch (_) {
      return "";
    }
  }
  function saveToken(v) {
    try {
      if (v) sessionStorage.setItem(TOKEN_KEY, v);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch (_) {
      /* storage unavailable: the token just isn't remembered */
    }
  }

  function showResult(ok, text) {
    setAttr(confirmResult, "data-ok", ok === null ? null : ok ? "true" : "false");
    setText(confirmResult, text);
  }

  function checkBudget() {
    const r = parseDollars(budgetInput.value);
    setText($("#budget-error"), r.ok ? (r.value !== null ? `= ${r.value.toLocaleString("en-US")} micro-dollar${r.value === 1 ? "" : "s"}` : "") : r.error);
    $("#budget-error").classList.toggle("bad", !r.ok);
    setAttr(budgetInput, "aria-invalid", r.ok ? null : "true");
    return r;
  }

  function checkReason() {
    const n = reasonInput.value.length;
    setText($("#reason-count"), n ? `${n}/${REASON_MAX}` : "");
    $("#reason-count").classList.toggle("near", n > REASON_MAX * 0.9);
  }

  function setDialogMode(mode) {
    dialogMode = mode;
    setAttr(dialog, "data-mode", mode);
    for (const el of dialog.querySelectorAll("[data-mode-only]")) el.hidden = el.getAttribute("data-mode-only") !== mode;
    setText($("#confirm-label"), mode === "task" ? "Type the task id to confirm" : "Type the swarm id to confirm");
    setText(confirmBtn, mode === "task" ? "Reopen task" : "Reset breaker");
  }

  function syncBreakerLine() {
    const s = S.swarms.get(dialogId);
    const b = s && s.breaker;
    const st = b ? String(b.state) : "none";
    fill($("#confirm-breaker"),
      "Breaker now: ",
      h("span", { class: "breaker", "data-state": st, text: st === "none" ? "no breaker" : st.replace("_", "-") }),
      b && b.reason ? h("span", { text: ` — ${b.reason}` }) : null,
      s && s.budget ? h("span", { class: "muted", text: ` · budget ${fmtMoney(s.budget.limit_micros - (s.budget.spent_micros || 0) - (s.budget.reserved_micros || 0))} of ${fmtMoney(s.budget.limit_micros)} left` }) : null
    );
  }

  /** Fill the task-state block; answers whether the task can be reopened now. */
  function syncTaskLine() {
    const box = $("#confirm-task-state");
    const t = S.tasks.get(dialogId);
    if (!t) {
      box.replaceChildren(h("p", { class: "task-now-line", "data-status": "missing" }, "Task now: ", h("span", { class: "bad", text: "not on the board any more" })));
      setAttr(box, "data-status", "missing");
      return false;
    }
    const status = statusOf(t);
    setAttr(box, "data-status", status);
    const attempts = Number(t.attempts) || 0;
    const max = Number(t.max_attempts) || 0;
    const err = isFilled(t.error) ? String(t.error) : "";
    const errShown = err.length > 300 ? `${err.slice(0, 299)}…` : err;
    fill(box,
      isFilled(t.title) ? h("p", { class: "task-now-title", title: String(t.title), text: String(t.title) }) : null,
      h("p", { class: "task-now-line" },
        "Task now: ",
        h("span", { class: "badge", "data-status": status, text: status }),
        h("span", { class: `attempts${max && attempts >= max ? " exhausted" : ""}`, title: "attempts used / max attempts", text: ` · attempts ${attempts}/${max || "—"}` }),
        status !== "failed" && !actionDone ? h("span", { class: "note", text: ` — no longer failed, nothing to reopen` }) : null),
      err ? h("p", { class: "task-now-error", title: err, text: `Error: ${errShown}` }) : null
    );
    return status === "failed";
  }

  function syncDialog() {
    if (!dialogId) return;
    $("#actions-disabled").hidden = S.actions;
    let possible = true;
    if (dialogMode === "task") possible = syncTaskLine();
    else syncBreakerLine();
    confirmBtn.disabled = !(S.actions && possible && !actionInFlight && confirmInput.value === dialogId);
  }

  function openDialog(mode, id) {
    clearTimeout(closeTimer);
    setDialogMode(mode);
    dialogId = id;
    setText($(mode === "task" ? "#confirm-task" : "#confirm-swarm"), id);
    confirmInput.value = "";
    confirmInput.placeholder = id;
    budgetInput.value = "";
    reasonInput.value = "";
    tokenInput.value = loadToken();
    checkBudget();
    checkReason();
    showResult(null, "");
    actionInFlight = false;
    actionDone = false;
    syncDialog();
    if (!dialog.open) dialog.showModal();
    confirmInput.focus();
  }
  const openReset = (swarmId) => openDialog("breaker", swarmId);
  const openReopen = (taskId) => openDialog("task", taskId);

  /** POST an action; answers {res, data} (data null when the body is not JSON). */
  async function postAction(url, token, body) {
    const res = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json", Authorization: `Bearer ${token}` },
      body: JSON.stringify(body),
    });
    let data = null;
    try {
      data = await res.json();
    } catch (_) {
      data = null;
    }
    return { res, data };
  }

  function failText(res, data) {
    const msg = (data && (data.error || data.detail || data.message)) || res.statusText || "request failed";
    return `✗ ${msg} (HTTP ${res.status})`;
  }

  function closeSoon(mode, id) {
    closeTimer = setTimeout(() => {
      if (dialog.open && dialogMode === mode && dialogId === id) dialog.close("done");
    }, 900);
  }

  function doConfirm() {
    return dialogMode === "task" ? doReopen() : doReset();
  }

  function takeToken() {
    const token = tokenInput.value.trim();
    if (!token) {
      showResult(false, "✗ Enter the operator token");
      tokenInput.focus();
      return null;
    }
    saveToken(token);
    return token;
  }

  async function doReset() {
    syncDialog();
    if (confirmBtn.disabled || !dialogId || dialogMode !== "breaker") return;
    const swarmId = dialogId;
    const budget = checkBudget();
    if (!budget.ok) {
      showResult(false, `✗ ${budget.error}`);
      budgetInput.focus();
      return;
    }
    const token = takeToken();
    if (!token) return;
    const body = { confirm: swarmId };
    if (budget.value !== null) body.budget_micros = budget.value;
    await sendAction("Resetting…", `/api/breakers/${encodeURIComponent(swarmId)}/reset`, token, body, () => {
      showResult(true, `✓ Breaker of ${swarmId} reset${budget.value !== null ? ` with a new budget of ${fmtMoney(budget.value)}` : ""}`);
      closeSoon("breaker", swarmId);
    });
  }

  // One action request: the dialog is busy meanwhile; a refusal or a lost
  // answer is shown in #confirm-result, a success is handed to onOk.
  async function sendAction(busyText, url, token, body, onOk) {
    actionInFlight = true;
    syncDialog();
    showResult(null, busyText);
    try {
      const { res, data } = await postAction(url, token, body);
      if (res.ok && data && data.ok === true) {
        onOk(data);
      } else {
        showResult(false, failText(res, data));
      }
    } catch (err) {
      showResult(false, `✗ The server did not answer: ${err && err.message ? err.message : err}`);
    } finally {
      actionInFlight = false;
      syncDialog();
    }
  }

  async function doReopen() {
    syncDialog();
    if (confirmBtn.disabled || !dialogId || dialogMode !== "task") return;
    const taskId = dialogId;
    const reason = reasonInput.value.trim();
    if (reason.length > REASON_MAX) {
      showResult(false, `✗ The reason is too long (at most ${REASON_MAX} characters)`);
      reasonInput.focus();
      return;
    }
    const token = takeToken();
    if (!token) return;
    const body = { confirm: taskId };
    if (reason) body.reason = reason;
    await sendAction("Reopening…", `/api/tasks/${encodeURIComponent(taskId)}/reopen`, token, body, (data) => {
      // The task's change arrives as a normal `task` event; the answer (the
      // coordinator's own task record) only words the message.
      const t = data.task && typeof data.task === "object" ? data.task : null;
      const now = t && STATUSES.includes(t.status) ? `: now ${t.status}` : "";
      actionDone = true;
      showResult(true, `✓ Task ${taskId} reopened with a fresh set of attempts${now}`);
      closeSoon("task", taskId);
    });
  }

  // ---------------------------------------------------------------- ticker --
  function tick() {
    const now = serverNow();
    setText($("#clock"), fmtClock(now));
    for (const td of document.querySelectorAll("[data-lease-until]")) {
      const left = Number(td.getAttribute("data-lease-until")) - now;
      const state = left <= 0 ? "lapsed" : left < 10 ? "soon" : "ok";
      setText(td, left <= 0 ? "lapsed" : fmtDuration(left));
      setAttr(td, "data-lease", state);
    }
    for (const t of document.querySelectorAll("time[data-at]")) {
      setText(t, fmtAgo(Number(t.getAttribute("data-at"))));
    }
  }

  // ----------------------------------------------------------------- wiring --
  function wire() {
    filterInput.addEventListener("input", () => invalidate("filter"));
    statusFilter.addEventListener("change", () => invalidate("filter"));

    for (const btn of document.querySelectorAll(".view-btn")) {
      btn.addEventListener("click", () => {
        $("#board-body").dataset.view = btn.dataset.view;
        for (const b of document.querySelectorAll(".view-btn")) b.setAttribute("aria-pressed", String(b === btn));
      });
    }

    const svg = $("#graph");
    svg.addEventListener("click", (ev) => {
      const g = ev.target.closest("[data-node]");
      if (g) selectTask(g.getAttribute("data-node"), "graph");
    });
    svg.addEventListener("mouseover", (ev) => {
      const g = ev.target.closest("[data-node]");
      if (g && !g.contains(ev.relatedTarget)) highlightEdges(g.getAttribute("data-node"), true);
    });
    svg.addEventListener("mouseout", (ev) => {
      const g = ev.target.closest("[data-node]");
      if (g && !g.contains(ev.relatedTarget)) highlightEdges(g.getAttribute("data-node"), false);
    });

    $("#tasks").addEventListener("click", (ev) => {
      const reopen = ev.target.closest("button.reopen[data-task]");
      if (reopen) return openReopen(reopen.getAttribute("data-task"));
      const chipEl = ev.target.closest("[data-goto]");
      if (chipEl) return selectTask(chipEl.getAttribute("data-goto"), "chip");
      const tr = ev.target.closest("tr[data-task]");
      if (tr) selectTask(tr.getAttribute("data-task"), "table");
    });
    for (const sel of ["#swarms", "#waiting"]) {
      $(sel).addEventListener("click", (ev) => {
        const reset = ev.target.closest("button.reset[data-swarm]");
        if (reset) return openReset(reset.getAttribute("data-swarm"));
        const reopen = ev.target.closest("button.reopen[data-task]");
        if (reopen) return openReopen(reopen.getAttribute("data-task"));
        const chipEl = ev.target.closest("[data-goto]");
        if (chipEl) selectTask(chipEl.getAttribute("data-goto"), "chip");
      });
    }

    $("#verify-btn").addEventListener("click", verifyNow);

    confirmInput.addEventListener("input", syncDialog);
    tokenInput.addEventListener("input", () => saveToken(tokenInput.value.trim()));
    budgetInput.addEventListener("input", () => {
      checkBudget();
      if (confirmResult.getAttribute("data-ok") === "false") showResult(null, "");
    });
    reasonInput.addEventListener("input", () => {
      checkReason();
      if (confirmResult.getAttribute("data-ok") === "false") showResult(null, "");
    });
    confirmBtn.addEventListener("click", doConfirm);
    $("#cancel-btn").addEventListener("click", () => dialog.close("cancel"));
    $("#confirm-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      doConfirm();
    });
    dialog.addEventListener("close", () => {
      clearTimeout(closeTimer);
      dialogId = null;
    });
  }

  function start() {
    wire();
    setConn("reconnecting");
    renderVerify();
    tick();
    setInterval(tick, 1000);
    connect();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
