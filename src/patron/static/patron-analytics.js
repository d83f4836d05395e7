/* The analytics pages' "Refresh now": requests a refresh job through the API and follows its
 * progress (GET every second) until it is done or failed. Without JavaScript the same button
 * posts the form, and the page reloads itself while the job runs. */
(function () {
  "use strict";

  var API = "/api/v1/analytics/refresh-jobs";
  var POLL_MS = 1000;

  function $(id) { return document.getElementById(id); }

  function parse(el, name) {
    try { return JSON.parse(el.getAttribute(name) || "{}"); } catch (err) { return {}; }
  }

  function localTime(iso, zone) {
    if (!iso) { return ""; }
    var parts = {};
    new Intl.DateTimeFormat("en-CA", {
      timeZone: zone || undefined, year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", hourCycle: "h23"
    }).formatToParts(new Date(iso)).forEach(function (p) { parts[p.type] = p.value; });
    return parts.year + "-" + parts.month + "-" + parts.day + " " + parts.hour + ":" +
      parts.minute;
  }

  function start(panel) {
    var steps = parse(panel, "data-steps");
    var statuses = parse(panel, "data-statuses");
    var zone = panel.getAttribute("data-tz");
    var button = $("refresh-button");
    var timer = null;

    function stepLabel(step) {
      if (!step) { return ""; }
      var cut = step.indexOf(":");
      var head = cut < 0 ? step : step.slice(0, cut);
      var rest = cut < 0 ? "" : step.slice(cut + 1);
      var name = steps[head] || head;
      return rest ? name + " · " + rest : name;
    }

    function show(job) {
      panel.setAttribute("data-job", String(job.id));
      panel.setAttribute("data-status", job.status);
      var running = job.status === "queued" || job.status === "running";
      $("refresh-progress").hidden = false;
      $("refresh-bar").value = job.progress || 0;
      $("refresh-status").textContent = statuses[job.status] || job.status;
      $("refresh-step").textContent = stepLabel(job.step);
      $("refresh-count").textContent = job.steps_done + "/" + job.steps_total;
      if (button) { button.disabled = running; }
      var error = $("refresh-error");
      error.hidden = !(job.status === "failed" && job.error);
      error.textContent = job.error || "";
      if (!running) {
        var last = $("refresh-last");
        last.textContent = (panel.getAttribute("data-last-text") || "") + " ";
        var time = document.createElement("time");
        time.id = "refresh-last-time";
        time.textContent = localTime(job.finished_at, zone);
        var tag = document.createElement("span");
        tag.id = "refresh-last-status";
        tag.className = "tag " + (job.status === "done" ? "ok" : "bad");
        tag.textContent = statuses[job.status] || job.status;
        last.appendChild(time);
        last.appendChild(document.createTextNode(" "));
        last.appendChild(tag);
        $("refresh-reload").hidden = false;
      }
      return running;
    }

    function poll(id) {
      fetch(API + "/" + encodeURIComponent(id), {credentials: "same-origin",
                                                  headers: {"Accept": "application/json"}})
        .then(function (r) { return r.ok ? r.json() : Promise.reject(r); })
        .then(function (job) {
          if (show(job)) { timer = setTimeout(function () { poll(id); }, POLL_MS); }
        })
        .catch(function () { timer = setTimeout(function () { poll(id); }, POLL_MS * 3); });
    }

    var form = $("refresh-form");
    if (form) {
      form.addEventListener("submit", function (event) {
        event.preventDefault();
        if (button) { button.disabled = true; }
        fetch(API, {method: "POST", credentials: "same-origin",
                    headers: {"Content-Type": "application/json", "Accept": "application/json"},
                    body: "{}"})
          .then(function (r) {
            return r.json().then(function (body) { return {ok: r.ok, body: body}; });
          })
          .then(function (answer) {
            if (!answer.ok) {
              var error = $("refresh-error");
              error.hidden = false;
              error.textContent = (answer.body.error && answer.body.error.message) || "";
              if (button) { button.disabled = false; }
              return;
            }
            clearTimeout(timer);
            if (show(answer.body)) { poll(answer.body.id); }
          })
          .catch(function () { form.submit(); });  // the API is unreachable: the plain form
      });
    }

    var status = panel.getAttribute("data-status");
    var id = panel.getAttribute("data-job");
    if (id && (status === "queued" || status === "running")) { poll(id); }
  }

  function init() {
    var panel = $("refresh");
    if (panel) { start(panel); }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
