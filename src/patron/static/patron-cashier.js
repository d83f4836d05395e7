// The cashier's screen works without this file. With it: "more lines" adds an empty row
// without a round trip, and the commit button cannot be pressed twice while its form is sent
// (the server would still record one sale: the form carries its idempotency key).
(function () {
  "use strict";
  document.addEventListener("DOMContentLoaded", function () {
    var form = document.getElementById("cashier-form");
    if (!form) { return; }
    var more = document.getElementById("more-lines");
    var body = document.querySelector("#basket-lines tbody");
    if (more && body) {
      more.addEventListener("click", function (event) {
        var last = body.querySelector("tr.line:last-child");
        if (!last) { return; }
        event.preventDefault();
        var row = last.cloneNode(true);
        row.querySelectorAll("input").forEach(function (input) { input.value = ""; });
        row.querySelectorAll("small.error").forEach(function (el) { el.remove(); });
        row.querySelectorAll("td:nth-child(n+5)").forEach(function (td) { td.textContent = ""; });
        body.appendChild(row);
        row.querySelector("input").focus();
      });
    }
    form.addEventListener("submit", function (event) {
      var button = event.submitter;
      if (button && button.hasAttribute("data-once")) {
        if (form.dataset.sending === "1") { event.preventDefault(); return; }
        form.dataset.sending = "1";
        window.setTimeout(function () { button.disabled = true; }, 0);
      }
    });
  });
})();
