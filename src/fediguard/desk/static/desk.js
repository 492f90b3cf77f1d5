// Keyboard shortcuts of the review desk. Nothing else: every action is a plain form without it.
"use strict";
(function () {
  var page = document.body.dataset.page;
  var typing = function (el) { return el && (el.tagName === "INPUT" || el.tagName === "TEXTAREA" || el.tagName === "SELECT"); };
  var help = document.getElementById("help");
  // Forms that change a setting come back to the page they were sent from.
  Array.prototype.forEach.call(document.querySelectorAll('input[name="back"]'), function (el) {
    el.value = window.location.pathname + window.location.search;
  });

  function queueKeys(ev) {
    var rows = Array.prototype.slice.call(document.querySelectorAll("tr.item"));
    if (!rows.length) return false;
    var at = rows.indexOf(document.querySelector("tr.item.selected"));
    if (ev.key === "j" || ev.key === "k") {
      if (at >= 0) rows[at].classList.remove("selected");
      at = ev.key === "j" ? Math.min(rows.length - 1, at + 1) : Math.max(0, at - 1);
      rows[at].classList.add("selected");
      rows[at].focus();
      return true;
    }
    if (ev.key === "Enter" && at >= 0) { window.location.href = rows[at].dataset.href; return true; }
    return false;
  }

  var pending = null;
  var buttons = { c: "act-confirm", o: "act-overturn", d: "act-remove", p: "act-report" };
  function choose(id, field) {
    pending = id;
    var shown = document.getElementById("pending-action");
    if (shown) shown.textContent = id ? "Enter: " + document.getElementById(id).textContent + " (Esc cancels)" : "";
    if (field) document.getElementById(field).focus();
  }

  function itemKeys(ev) {
    if (buttons[ev.key] && document.getElementById(buttons[ev.key])) { choose(buttons[ev.key], ev.key === "p" ? "reference" : "reason"); return true; }
    if (ev.key === "x" && document.getElementById("export-reason")) { choose("act-export", "export-reason"); return true; }
    if (ev.key === "v" && document.getElementById("reveal")) { choose("reveal", "reveal-reason"); return true; }
    if (ev.key === "u") { window.location.href = "/"; return true; }
    if (ev.key === "n") {
      var next = document.getElementById("next");
      if (next) window.location.href = next.getAttribute("href");
      return true;
    }
    return false;
  }

  document.addEventListener("keydown", function (ev) {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    var target = ev.target;
    if (ev.key === "Escape") { choose(null); if (typing(target)) target.blur(); if (help) help.hidden = true; return; }
    if (typing(target)) {
      if (ev.key === "Enter" && pending) {
        if (pending === "act-report" && target.id === "reference") { document.getElementById("reason").focus(); ev.preventDefault(); return; }
        ev.preventDefault();
        var button = document.getElementById(pending);
        pending = null;
        button.click();
      }
      return;
    }
    var handled = false;
    if (ev.key === "?" && help) { help.hidden = !help.hidden; handled = true; }
    else if (page === "queue") handled = queueKeys(ev);
    else if (page === "item") handled = itemKeys(ev);
    if (handled) ev.preventDefault();
  });
})();
