// Keyboard-driven review: a approve, r remove, e escalate, j/n next, k previous, c category, / note.
// Served as a file (the page's Content-Security-Policy allows no inline script).
(function () {
  "use strict";
  var items = Array.prototype.slice.call(document.querySelectorAll("article.item"));
  var current = 0;
  function select(i) {
    if (!items.length) { return; }
    current = Math.max(0, Math.min(items.length - 1, i));
    items.forEach(function (el, n) { el.classList.toggle("current", n === current); });
    items[current].scrollIntoView({ block: "nearest" });
  }
  function decide(decision) {
    if (!items.length) { return; }
    var form = items[current].querySelector("form.decide");
    var button = form.querySelector("button[value='" + decision + "']");
    if (form.requestSubmit) { form.requestSubmit(button); } else { button.click(); }
  }
  document.addEventListener("keydown", function (ev) {
    var tag = (ev.target && ev.target.tagName) || "";
    if (tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA") {
      if (ev.key === "Escape") { ev.target.blur(); }
      return;
    }
    if (ev.ctrlKey || ev.metaKey || ev.altKey) { return; }
    var actions = {
      a: function () { decide("approve"); }, r: function () { decide("remove"); },
      e: function () { decide("escalate"); }, j: function () { select(current + 1); },
      n: function () { select(current + 1); }, k: function () { select(current - 1); },
      c: function () { if (items.length) { items[current].querySelector("select").focus(); } },
      "/": function () { if (items.length) { items[current].querySelector("input[name=note]").focus(); } }
    };
    var act = actions[ev.key];
    if (act) { ev.preventDefault(); act(); }
  });
  items.forEach(function (el, n) { el.addEventListener("click", function () { select(n); }); });
})();
