// deployd console: local times, confirmations, and live updates over the
// server's event streams. Hand-written, no dependencies, no build step; every
// page works without it (times in UTC, forms post without confirmation, a
// reload shows the latest state).
"use strict";

// Times: the text becomes the viewer's zone; the UTC text stays in the title.
function localizeTimes(root) {
  root.querySelectorAll("time[datetime]").forEach(function (el) {
    var when = new Date(el.getAttribute("datetime"));
    if (isNaN(when.getTime())) { return; }
    el.textContent = when.toLocaleString(undefined, {
      year: "numeric", month: "short", day: "numeric",
      hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short"
    });
  });
}

// Confirmations: a button or form with data-confirm asks before posting.
document.addEventListener("submit", function (event) {
  var button = event.submitter;
  var question = (button && button.getAttribute("data-confirm")) ||
    event.target.getAttribute("data-confirm");
  if (question && !window.confirm(question)) { event.preventDefault(); }
});

// A live region: re-fetches its HTML fragment (data-live-src) whenever its
// event stream (data-live-events) says something happened, at most every
// 250 ms, and stops when the fragment says its subject is settled. An event
// that arrives while a fetch is under way marks the region dirty, so the
// newest state is always fetched once more after it (never lost).
function followRegion(region) {
  var source = region.getAttribute("data-live-src");
  var events = region.getAttribute("data-live-events");
  var stream = null;
  var pending = false;
  var dirty = false;
  var timer = null;
  var failures = 0;
  function settled() {
    return region.getAttribute("data-settled") === "true" ||
      (region.firstElementChild !== null &&
        region.firstElementChild.getAttribute("data-settled") === "true");
  }
  function swap(html) {
    // Keep the keyboard focus on the same control across the swap.
    var focused = document.activeElement && document.activeElement.id;
    region.innerHTML = html;
    localizeTimes(region);
    if (focused) {
      var again = document.getElementById(focused);
      if (again) { again.focus(); }
    }
    region.setAttribute("data-refreshed", String(Date.now()));
    region.removeAttribute("data-stale");
  }
  function refresh() {
    timer = null;
    if (pending) { dirty = true; return; }
    pending = true;
    dirty = false;
    fetch(source, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (response) {
        if (!response.ok) { throw new Error("status " + response.status); }
        return response.text();
      })
      .then(function (html) {
        failures = 0;
        swap(html);
        if (settled() && stream) { stream.close(); stream = null; }
      })
      .catch(function () {
        region.setAttribute("data-stale", "true");
        // Retry a few times with back-off: the last state must not be lost.
        failures += 1;
        if (failures <= 5) { dirty = true; }
      })
      .then(function () {
        pending = false;
        if (dirty) { setTimeout(refresh, 250 * Math.max(1, failures)); }
      });
  }
  function schedule() { if (!timer) { timer = setTimeout(refresh, 250); } }
  if (settled()) { return; }
  stream = new EventSource(events);
  stream.addEventListener("transition", schedule);
  stream.addEventListener("end", function () {
    stream.close();
    stream = null;
    refresh();
  });
  stream.onerror = function () { schedule(); };
}

// A live log: appends each chunk of its stream (data-log-events) as text.
function followLog(pre) {
  var stream = new EventSource(pre.getAttribute("data-log-events"));
  stream.addEventListener("log", function (event) {
    var chunk = JSON.parse(event.data);
    var atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    // The engine writes a chunk as a line without its newline; others end theirs.
    var text = chunk.content;
    if (text.charAt(text.length - 1) !== "\n") { text += "\n"; }
    pre.appendChild(document.createTextNode(text));
    if (atBottom) { pre.scrollTop = pre.scrollHeight; }
  });
  stream.addEventListener("end", function (event) {
    stream.close();
    pre.setAttribute("data-ended", "true");
    // The end event carries the task's final status: show it without a reload.
    var badge = document.getElementById("task-status");
    try {
      var end = JSON.parse(event.data);
      if (badge && end && typeof end.status === "string") {
        badge.textContent = end.status;
        badge.className = "badge status-" + end.status;
      }
    } catch (e) { /* an end without a status changes nothing */ }
  });
}

document.addEventListener("DOMContentLoaded", function () {
  localizeTimes(document);
  document.querySelectorAll("[data-live-src][data-live-events]").forEach(followRegion);
  document.querySelectorAll("pre[data-log-events]").forEach(followLog);
});
