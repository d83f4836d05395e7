// Patron: small behaviours any page may use, from a script file of Patron's own so the pages
// keep `script-src 'self'`.
(function () {
  "use strict";
  // A form, or the one button of a form, that undoes or ends something (archive, cancel,
  // revoke, delete) carries data-confirm="question": submitting it asks the question first
  // and stays on the page when the answer is no.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement)) return;
    var button = event.submitter;
    var question = (button && button.getAttribute("data-confirm")) ||
      form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
      event.stopImmediatePropagation();
    }
  }, true);
  // A checkbox with data-select-all="selector" ticks or clears every checkbox the selector
  // finds, and shows whether all, some or none of them are ticked.
  function boxes(master) {
    return Array.prototype.slice.call(
      document.querySelectorAll(master.getAttribute("data-select-all")));
  }
  function reflect(master) {
    var all = boxes(master);
    var ticked = all.filter(function (b) { return b.checked; }).length;
    master.checked = all.length > 0 && ticked === all.length;
    master.indeterminate = ticked > 0 && ticked < all.length;
  }
  document.addEventListener("change", function (event) {
    var box = event.target;
    if (!(box instanceof HTMLInputElement) || box.type !== "checkbox") return;
    if (box.hasAttribute("data-select-all")) {
      boxes(box).forEach(function (b) { b.checked = box.checked; });
      box.indeterminate = false;
      return;
    }
    document.querySelectorAll("input[data-select-all]").forEach(function (master) {
      if (boxes(master).indexOf(box) >= 0) reflect(master);
    });
  });
})();
