// Patron: a form, or the one button of a form, that undoes or ends something (archive, cancel,
// revoke, delete) carries data-confirm="question"; submitting it asks the question first and
// stays on the page when the answer is no. A script file of Patron's own, so the pages keep
// `script-src 'self'`.
(function () {
  "use strict";
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
})();
