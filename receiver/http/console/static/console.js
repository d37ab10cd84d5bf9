// receiver's console: the little it needs a script for. The pages work without it; with it the
// overview refreshes itself and the timeline's axis labels find their places. Nothing here writes
// markup: every value from the server goes in as text (textContent) or a number (attributes).
"use strict";

function place(root) {
  for (const tick of root.querySelectorAll(".ticks span[data-x]")) {
    tick.style.left = Number(tick.dataset.x) + "%";
  }
}

function formatNumber(value) {
  if (typeof value !== "number") return value === null || value === undefined ? "—" : String(value);
  return value.toLocaleString("en-US", { maximumFractionDigits: value % 1 ? 1 : 0 });
}

function formatAge(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m " + String(s % 60).padStart(2, "0") + "s";
  if (s < 86400) return Math.floor(s / 3600) + "h " + String(Math.floor(s / 60) % 60).padStart(2, "0") + "m";
  return Math.floor(s / 86400) + "d " + (Math.floor(s / 3600) % 24) + "h";
}

function setField(root, name, text) {
  for (const el of root.querySelectorAll("[data-field]")) {
    if (el.dataset.field === name) el.textContent = text;
  }
}

function render(root, data) {
  setField(document, "now", data.now);
  setField(root, "rate_now", formatNumber(data.rate_now));
  setField(root, "top", formatNumber(data.top));
  setField(root, "quarantine", formatNumber(data.quarantine));
  for (const [outcome, n] of Object.entries(data.outcomes)) setField(root, "outcomes." + outcome, formatNumber(n));
  for (const [state, n] of Object.entries(data.tasks)) setField(root, "tasks." + state, formatNumber(n));
  data.bars.forEach((bar, i) => {
    for (const rect of root.querySelectorAll("rect[data-bar]")) {
      if (rect.dataset.bar !== String(i)) continue;
      rect.setAttribute("y", String(bar.y));
      rect.setAttribute("height", String(bar.height));
      const title = rect.querySelector("title");
      if (title) title.textContent = bar.label + ": " + data.rates[i].per_second + "/s";
    }
    for (const tick of root.querySelectorAll("text[data-tick]")) {
      if (tick.dataset.tick === String(i)) tick.textContent = bar.label;
    }
  });
  const rows = new Map();
  for (const row of root.querySelectorAll("tr[data-sink]")) rows.set(row.dataset.sink, row);
  let changed = rows.size !== data.sinks.length;
  for (const sink of data.sinks) {
    const row = rows.get(sink.sink);
    if (!row || row.dataset.disabled !== (sink.disabled ? "yes" : "no")) { changed = true; continue; }
    setField(row, "backlog", formatNumber(sink.backlog));
    setField(row, "oldest", formatAge(sink.oldest_undelivered_age_seconds));
    for (const el of row.querySelectorAll('[data-field="dead"] a')) el.textContent = formatNumber(sink.dead);
    setField(row, "breaker", sink.breaker);
  }
  return changed;
}

function poll(root) {
  const url = root.dataset.poll;
  const tick = async () => {
    try {
      const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (response.status === 401 || response.redirected) { window.location.reload(); return; }
      if (response.ok && render(root, await response.json())) { window.location.reload(); return; }
      root.dataset.refreshed = String(Date.now());
    } catch (err) {
      // The next tick tries again.
    }
    window.setTimeout(tick, 5000);
  };
  window.setTimeout(tick, 5000);
}

document.addEventListener("DOMContentLoaded", () => {
  place(document);
  const overview = document.getElementById("overview");
  if (overview && overview.dataset.poll) poll(overview);
});
