/* Adds and removes pledge and need lines in the page. Without JavaScript the same
   buttons send the form back and the server adds or removes the line. */
(function () {
  "use strict";
  function renumber(container) {
    container.querySelectorAll("[data-line]").forEach(function (row, index) {
      row.querySelectorAll("[name], [id], [for], [aria-describedby]").forEach(function (el) {
        ["name", "id", "for", "aria-describedby"].forEach(function (attr) {
          var value = el.getAttribute(attr);
          if (value) {
            el.setAttribute(attr, value.replace(/^(f-)?lines([.-])(\d+|__N__)([.-])/, function (_m, f, a, _n, b) {
              return (f || "") + "lines" + a + index + b;
            }));
          }
        });
      });
      var remove = row.querySelector("[data-remove-line]");
      if (remove) { remove.value = String(index); }
      var number = row.querySelector("[data-n]");
      if (number) { number.textContent = String(index + 1); }
    });
  }
  document.addEventListener("click", function (event) {
    var add = event.target.closest("[data-add-line]");
    var remove = event.target.closest("[data-remove-line]");
    if (!add && !remove) { return; }
    var form = event.target.closest("form");
    var container = form && form.querySelector("[data-lines]");
    var template = form && form.querySelector("template[data-line-template]");
    if (!container || !template) { return; }
    event.preventDefault();
    if (add) {
      var row = template.content.firstElementChild.cloneNode(true);
      container.appendChild(row);
      renumber(container);
      var first = row.querySelector("select, input");
      if (first) { first.focus(); }
    } else {
      var rows = container.querySelectorAll("[data-line]");
      if (rows.length > 1) {
        remove.closest("[data-line]").remove();
        renumber(container);
        var focus = container.querySelector("[data-line]:last-child select");
        if (focus) { focus.focus(); }
      }
    }
  });
})();

/* Receipts: each line's accepted + damaged + short added up as they are typed, and a
   line whose total differs from what it carried is marked. The API checks it again. */
(function () {
  "use strict";
  function check(line) {
    var total = 0;
    line.querySelectorAll('input[type="number"]').forEach(function (input) {
      var n = parseInt(input.value, 10);
      if (!isNaN(n)) { total += n; }
    });
    var carried = parseInt(line.getAttribute("data-quantity"), 10);
    var box = line.querySelector("[data-total]");
    if (!box) { return; }
    box.querySelector("output").textContent = String(total);
    var wrong = total !== carried;
    box.classList.toggle("mismatch", wrong);
    box.querySelector("[data-mismatch]").hidden = !wrong;
  }
  document.addEventListener("input", function (event) {
    var line = event.target.closest && event.target.closest("[data-receipt-line]");
    if (line) { check(line); }
  });
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-receipt-line]").forEach(check);
  });
})();

/* Region inputs suggest regions by name as people type ("武昌" offers 武汉市武昌区);
   choosing one puts its code in the input. Without JavaScript the server takes a
   name that finds one region. */
(function () {
  "use strict";
  var timer = null;
  document.addEventListener("input", function (event) {
    var input = event.target;
    if (!input.matches || !input.matches("input[data-region]")) { return; }
    var list = document.getElementById(input.getAttribute("list"));
    var text = input.value.trim();
    if (!list || !text || /^\d+$/.test(text)) { return; }
    clearTimeout(timer);
    timer = setTimeout(function () {
      fetch("/regions?q=" + encodeURIComponent(text), { credentials: "same-origin" })
        .then(function (answer) { return answer.ok ? answer.json() : []; })
        .then(function (found) {
          list.replaceChildren.apply(list, found.map(function (region) {
            var option = document.createElement("option");
            option.value = region.code;
            option.label = region.name;
            option.textContent = region.name;
            return option;
          }));
        })
        .catch(function () { /* suggestions are a convenience; the form works without */ });
    }, 200);
  });
})();
