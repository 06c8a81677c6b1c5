// The staff screen: pairs once, then listens to the agent's pushes (link.js) and draws them.
// Text goes in with textContent only, never as HTML: names and traits come from devices.
"use strict";

const TOKEN_KEY = "edge-agent.screen-token";
// The API's lists (by the model that made them) and the panels that show them.
const BASKET_SHOWN = 6;
const PANELS = { "next-basket": "personal", complements: "complements", trending: "trending" };

const $ = (id) => document.getElementById(id);
const charts = {};
// The charts span the whole day shown, whatever hours have figures yet (in seconds).
let day = [0, 86400];

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

function showView(view) {
  document.body.dataset.view = view;
  $("tab-visitor").setAttribute("aria-pressed", String(view === "visitor"));
  $("tab-site").setAttribute("aria-pressed", String(view === "site"));
  Object.values(charts).forEach((chart) => fit(chart));
}

function label(entry) {
  return entry.name || `Product ${entry.item}`;
}

function fill(list, entries, withReason) {
  const items = entries.map((entry) => {
    const li = document.createElement("li");
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = label(entry);
    li.append(name);
    if (withReason) {
      const reason = document.createElement("span");
      reason.className = "reason";
      reason.textContent = entry.reason;
      li.append(reason);
    }
    return li;
  });
  list.replaceChildren(...items);
}

function drawVisitor(body) {
  $("where").textContent = `${body.screen.label} · ${body.screen.place}`;
  const visitor = body.visitor;
  $("greeting").textContent = !visitor.present
    ? "Waiting for a customer"
    : visitor.first_name
      ? `Serving ${visitor.first_name}`
      : "Customer here";
  $("personal-title").textContent = visitor.first_name
    ? `Picked for ${visitor.first_name}`
    : "Picked for this customer";
  $("basket-row").hidden = body.basket.length === 0;
  // A long basket would push the suggestions off the screen: the items scanned last, and
  // how many came before them.
  const earlier = Math.max(0, body.basket.length - BASKET_SHOWN);
  const basket = body.basket.slice(earlier).map((entry) => {
    const li = document.createElement("li");
    li.textContent = label(entry);
    return li;
  });
  if (earlier > 0) {
    const more = document.createElement("li");
    more.className = "more";
    more.textContent = `and ${earlier} more`;
    basket.unshift(more);
  }
  $("basket").replaceChildren(...basket);
  let picks = 0;
  const missing = body.missing || {};
  for (const [list, name] of Object.entries(PANELS)) {
    const panel = $(`panel-${name}`);
    const entries = body.lists[list] || [];
    // An empty list says why (no consent, no basket yet, still learning), in staff words.
    const why = panel.querySelector(".why");
    why.textContent = entries.length === 0 ? missing[list] || "" : "";
    why.hidden = why.textContent === "";
    panel.hidden = entries.length === 0 && why.hidden;
    picks += entries.length;
    fill(panel.querySelector("ol"), entries, true);
  }
  $("no-picks").hidden = !visitor.present || picks > 0 || Object.keys(missing).length > 0;
}

// How the site writes numbers, money and times ([site] locale, currency and timezone), from
// /v1/site.
let writing = { locale: "en", currency: "", timezone: "UTC" };

// An hour as the site's clock shows it, written the site's way (14:00, 2 PM).
function clock(seconds) {
  return new Intl.DateTimeFormat(writing.locale || "en", {
    hour: "numeric",
    minute: "2-digit",
    timeZone: writing.timezone || "UTC",
  }).format(new Date(seconds * 1000));
}

// Axis text in the page's own size, so a 4K TV's charts are as legible as a tablet's.
function axisFont() {
  const px = parseFloat(getComputedStyle(document.documentElement).fontSize) || 16;
  return `${Math.round(px * 0.8)}px system-ui, sans-serif`;
}

function shown(value, style, currency) {
  if (value === null || value === undefined) return "–";
  const locale = writing.locale || "en";
  if (style === "percent") {
    return new Intl.NumberFormat(locale, { style: "percent", maximumFractionDigits: 1 }).format(value);
  }
  if (style === "money") {
    // Large sums without cents, so a day's revenue fits its tile.
    const digits = Math.abs(value) >= 10000 ? 0 : 2;
    const options = { minimumFractionDigits: digits, maximumFractionDigits: digits };
    const code = currency || writing.currency;
    if (code) Object.assign(options, { style: "currency", currency: code });
    return new Intl.NumberFormat(locale, options).format(value);
  }
  return new Intl.NumberFormat(locale, { maximumFractionDigits: 0 }).format(value);
}

function fit(chart) {
  const box = chart.root.parentElement;
  if (box.clientWidth > 0) chart.setSize({ width: box.clientWidth, height: box.clientHeight });
}

function chart(id, data, bars) {
  if (typeof uPlot === "undefined") return;
  if (charts[id]) {
    charts[id].setData(data);
    return;
  }
  const box = $(id);
  const paths = bars && uPlot.paths.bars ? uPlot.paths.bars({ size: [0.7] }) : undefined;
  charts[id] = new uPlot(
    {
      width: Math.max(box.clientWidth, 200),
      height: Math.max(box.clientHeight, 120),
      legend: { show: false },
      cursor: { show: false },
      scales: { x: { time: true, range: () => day }, y: { range: (_u, _min, max) => [0, Math.max(max ?? 0, 5)] } },
      axes: [
        { font: axisFont(), values: (_u, splits) => splits.map(clock), space: 80 },
        { font: axisFont(), size: 60 },
      ],
      series: [{}, { stroke: "#0b6e4f", fill: "#0b6e4f33", width: 3, paths, points: { show: !bars } }],
    },
    data,
    box,
  );
}

function drawSite(body) {
  writing = {
    locale: body.locale || "en",
    currency: body.currency || "",
    timezone: body.timezone || "UTC",
  };
  const total = body.total || {};
  for (const [key, style] of [
    ["footfall_in"], ["occupancy"], ["conversion", "percent"], ["nps"], ["orders"], ["revenue", "money"],
  ]) {
    $(`fig-${key}`).textContent = shown(total[key], style, total.currency);
  }
  // Money in other currencies is never added in: it is named beside the revenue instead.
  const other = Object.entries(total.other_revenue || {});
  $("cap-revenue").textContent = other.length
    ? `revenue (not counted: ${other.map(([code, sum]) => shown(sum, "money", code)).join(", ")})`
    : "revenue";
  fill($("top-products"), (total.top_products || []).map((p) => ({ ...p, reason: "" })), false);
  // The site's day: 23, 24 or 25 hours, each with a slot (empty until it has figures), so
  // bars keep their width.
  day = [body.day_start_ms / 1000, body.day_end_ms / 1000];
  const x = body.slots.map((ms) => ms / 1000);
  const byHour = new Map(body.hours.map((h) => [h.start_ms / 1000, h]));
  const value = (key) =>
    x.map((at) => {
      const h = byHour.get(at);
      return h && !h.suppressed ? h[key] : null;
    });
  chart("chart-footfall", [x, value("footfall_in")], true);
  chart("chart-occupancy", [x, value("occupancy")], false);
  const hidden = body.suppressed_hours;
  $("site-note").textContent =
    (hidden ? `${hidden} hour(s) hidden: fewer than ${body.k} visitors. ` : "") +
    "The hour under way counts what has happened so far.";
}

function start() {
  $("tab-visitor").addEventListener("click", () => showView("visitor"));
  $("tab-site").addEventListener("click", () => showView("site"));
  window.addEventListener("resize", () => Object.values(charts).forEach((c) => fit(c)));
  screenLink({
    tokenKey: TOKEN_KEY,
    setLink,
    notice,
    onEvent(event, body) {
      if (event === "visitor") drawVisitor(body);
      else if (event === "site") drawSite(body);
      else if (event === "trouble") setLink("down", "Agent busy, retrying");
    },
  }).start();
}

start();
