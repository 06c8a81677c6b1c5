// The gate screen: a TV at a venue's gates or a hall door, read from 5 m away. It pairs once,
// then draws what the agent pushes (link.js): entries per gate, the busiest gates, attendance,
// halls, and the warnings a steward acts on. Text goes in with textContent only, never as HTML:
// gate and hall names come from the scanners.
"use strict";

const TOKEN_KEY = "edge-agent.gate-token";
// A 1920x1080 TV holds three rows of three gates at a size read from 5 m; more gates are the
// busiest nine (in name order, so a gate keeps its place), and the rest are counted.
const MAX_TILES = 9;

const $ = (id) => document.getElementById(id);
let writing = { locale: "en", timezone: "UTC" };

function notice(title, text) {
  $("notice-title").textContent = title;
  $("notice-text").textContent = text;
  $("notice").hidden = false;
  document.body.dataset.state = "notice";
}

function setLink(state, text) {
  document.body.dataset.link = state;
  $("link").textContent = text;
}

function number(value, digits = 0) {
  if (value === null || value === undefined) return "–";
  return new Intl.NumberFormat(writing.locale || "en", { maximumFractionDigits: digits }).format(value);
}

function percent(share) {
  return new Intl.NumberFormat(writing.locale || "en", { style: "percent", maximumFractionDigits: 0 }).format(share);
}

// "north-3" is "Gate north-3"; a scanner that says "Gate 3" already is left as it is.
function named(kind, name) {
  return new RegExp(`^${kind}\\b`, "i").test(name) ? name : `${kind} ${name}`;
}

function tick() {
  $("clock").textContent = new Intl.DateTimeFormat(writing.locale || "en", {
    hour: "numeric",
    minute: "2-digit",
    timeZone: writing.timezone || "UTC",
  }).format(new Date());
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// One scale for every gate on the screen, so a quiet gate looks quiet beside a busy one.
function bars(series, top) {
  const box = element("div", "bars");
  for (const value of series) {
    const bar = element("span", "bar");
    // Set through the CSSOM: the page's policy allows no inline style attribute.
    bar.style.height = `${Math.round((value / top) * 100)}%`;
    box.append(bar);
  }
  box.lastChild?.classList.add("current");
  return box;
}

function gateTile(gate, k, warned, top) {
  const tile = element("article", "gate");
  tile.dataset.gate = gate.gate;
  tile.append(element("h3", "name", named("Gate", gate.gate)));
  if (gate.suppressed) {
    tile.classList.add("suppressed");
    tile.append(element("p", "hidden-figure", `fewer than ${k} people today`));
    return tile;
  }
  if (warned) tile.classList.add("warned");
  const now = element("p", "now");
  now.append(element("span", "figure", number(gate.this_minute)), element("span", "unit", "this minute"));
  tile.append(now, bars(gate.per_minute, top));
  tile.append(element("p", "caption", `${number(gate.last_5_min)} in 5 min · ${number(gate.today)} today`));
  return tile;
}

function drawGates(body, warned) {
  const all = body.gates;
  const recent = (g) => (g.suppressed ? -1 : g.per_minute.reduce((a, b) => a + b, 0));
  const shown = new Set(
    [...all].sort((a, b) => recent(b) - recent(a) || a.gate.localeCompare(b.gate)).slice(0, MAX_TILES),
  );
  const drawn = all.filter((g) => shown.has(g));
  const top = Math.max(5, ...drawn.flatMap((g) => (g.suppressed ? [] : g.per_minute)));
  const tiles = drawn.map((g) => gateTile(g, body.k, warned.has(g.gate), top));
  // As many rows as the gates need, so a hall door's one or two gates get the whole panel
  // (set through the CSSOM: the page's policy allows no inline style attribute).
  const columns = tiles.length === 4 ? 2 : Math.max(1, Math.min(3, tiles.length));
  const rows = Math.max(1, Math.ceil(tiles.length / columns));
  $("gates").style.gridTemplateColumns = `repeat(${columns}, minmax(0, 1fr))`;
  $("gates").style.gridTemplateRows = `repeat(${rows}, minmax(0, 1fr))`;
  $("gates").replaceChildren(...tiles);
  const rest = all.length - shown.size;
  $("gates-note").textContent =
    all.length === 0
      ? "No ticket scans yet today."
      : rest > 0
        ? `and ${rest} quieter gate${rest === 1 ? "" : "s"} not shown`
        : "";
}

function alertText(alert) {
  if (alert.kind === "rejections") {
    const reason = alert.reason.replaceAll("_", " ");
    return (
      `${named("Gate", alert.gate)}: ${percent(alert.rate)} of tickets refused ` +
      `(${number(alert.rejected)} of ${number(alert.scans)} in ${alert.minutes} min), mostly “${reason}”`
    );
  }
  const where = alert.kind === "hall_full" ? named("Hall", alert.hall) : "The venue";
  return `${where} is ${percent(alert.share)} full: ${number(alert.inside)} of ${number(alert.capacity)} inside`;
}

function drawAlerts(body) {
  $("alerts").replaceChildren(...body.alerts.map((a) => element("p", `alert ${a.kind}`, `⚠ ${alertText(a)}`)));
  document.body.dataset.alerts = String(body.alerts.length);
  const stale = body.stale.map((p) => `gates of ${p.site} not heard for ${number(p.silent_s)} s`);
  $("stale").textContent = stale.length ? `${stale.join(" · ")}: their figures may be behind` : "";
  $("stale").hidden = stale.length === 0;
}

function meter(fill, share) {
  fill.style.width = `${Math.round(Math.min(1, share ?? 0) * 100)}%`;
  fill.classList.toggle("high", share !== null && share > (writing.occupancyAlert ?? 0.9));
}

function drawAttendance(body) {
  const seen = body.attendance;
  $("attendance-title").textContent = seen && seen.basis === "admitted" ? "Admitted today" : "Inside now";
  $("attendance-people").textContent = seen ? number(seen.people) : "–";
  meter($("attendance-fill"), seen ? seen.share : null);
  const capacity = body.rules.capacity;
  $("attendance-caption").textContent = !seen
    ? "No ticket scans yet today"
    : capacity
      ? `of ${number(capacity)} · ${percent(seen.share)} of capacity`
      : "no capacity set";
}

function drawBusiest(body) {
  const rows = body.busiest.map((g) => {
    const li = element("li");
    li.append(element("span", "name", named("Gate", g.gate)), element("span", "count", number(g.last_5_min)));
    return li;
  });
  $("busiest").replaceChildren(...(rows.length ? rows : [element("li", "quiet", "No entries in the last 5 minutes")]));
}

function drawHalls(body) {
  const rows = body.halls.map((hall) => {
    const li = element("li", "hall");
    li.append(element("span", "name", named("Hall", hall.hall)));
    if (hall.suppressed) {
      li.append(element("span", "count", `fewer than ${body.k}`));
      return li;
    }
    li.append(
      element(
        "span",
        "count",
        hall.capacity ? `${number(hall.inside)} / ${number(hall.capacity)}` : `${number(hall.inside)} inside`,
      ),
    );
    const bar = element("div", "meter");
    const fill = element("div", "fill");
    bar.append(fill);
    meter(fill, hall.share);
    li.append(bar);
    return li;
  });
  $("halls").replaceChildren(...rows);
  $("halls-card").hidden = rows.length === 0;
}

function draw(body) {
  writing = {
    locale: body.locale || "en",
    timezone: body.timezone || "UTC",
    occupancyAlert: body.rules.occupancy_alert,
  };
  $("venue").textContent = `${body.venue} · gates`;
  const warned = new Set(body.alerts.filter((a) => a.kind === "rejections").map((a) => a.gate));
  drawAlerts(body);
  drawGates(body, warned);
  drawAttendance(body);
  drawBusiest(body);
  drawHalls(body);
  document.body.dataset.drawn = String(body.now_ms);
  tick();
}

function start() {
  setInterval(tick, 1000);
  screenLink({
    tokenKey: TOKEN_KEY,
    setLink,
    notice,
    onEvent(event, body) {
      if (event === "gate") draw(body);
      else if (event === "trouble") setLink("down", "Agent busy, retrying");
    },
  }).start();
}

start();
