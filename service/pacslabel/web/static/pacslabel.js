// Keyboard shortcuts for the worklist and task pages. No framework: a few listeners on server-rendered HTML.
// Keys never fire while the reader types (inputs, selects, textareas, editable content) or with modifiers,
// so that browser and OS shortcuts (Ctrl+S, Cmd+N) keep their meaning.
(function () {
  "use strict";

  function typing(target) {
    if (!target || !(target instanceof Element)) return false;
    if (target.isContentEditable) return true;
    return ["INPUT", "TEXTAREA", "SELECT"].indexOf(target.tagName) >= 0;
  }

  function help() { return document.getElementById("help"); }

  function toggleHelp(show) {
    var overlay = help();
    if (!overlay) return;
    var open = show === undefined ? overlay.hidden : show;
    overlay.hidden = !open;
    if (open) {
      var close = overlay.querySelector("button");
      if (close) close.focus();
    }
  }

  // The read A / R act on: the one holding the focus, else the first read on the page waiting for a decision.
  function currentRead() {
    var focused = document.activeElement && document.activeElement.closest &&
      document.activeElement.closest("[data-decide]");
    return focused || document.querySelector("[data-decide]");
  }

  function submitForm(form) {
    if (!form) return false;
    var question = form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) return true;
    form.removeAttribute("data-confirm"); // confirmed once; the submit listener must not ask again
    form.requestSubmit ? form.requestSubmit() : form.submit();
    return true;
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) event.preventDefault();
  });

  document.addEventListener("click", function (event) {
    var toggle = event.target.closest && event.target.closest("[data-help-toggle]");
    if (toggle) { toggleHelp(); return; }
    if (event.target === help()) toggleHelp(false); // a click on the dimmed backdrop closes the help
  });

  document.addEventListener("keydown", function (event) {
    var overlay = help();
    if (!overlay) return; // not logged in (login page): no shortcuts
    if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
    if (event.key === "Escape" && !overlay.hidden) { toggleHelp(false); event.preventDefault(); return; }
    if (event.key === "?") { toggleHelp(); event.preventDefault(); return; }
    if (!overlay.hidden) return;
    var handled = false;
    switch (event.key) {
      case "n": case "N": {
        // On the review queue N is "Next review"; elsewhere the worklist's Next.
        var next = document.getElementById("next-form") || document.getElementById("next-review-form");
        if (next) { handled = submitForm(next); }
        else {
          // Not on the worklist: post to /next from here (same door, same server-side claim).
          var form = document.createElement("form");
          form.method = "post"; form.action = "/next"; document.body.appendChild(form); form.submit(); handled = true;
        }
        break;
      }
      case "s": case "S":
        handled = submitForm(document.getElementById("submit-form"));
        break;
      case "v": case "V": {
        var viewer = document.getElementById("open-viewer");
        if (viewer) { viewer.click(); handled = true; }
        break;
      }
      case "a": case "A": {
        var card = currentRead();
        if (card) handled = submitForm(card.querySelector("form.approve-form"));
        break;
      }
      case "r": case "R": {
        // A rejection needs a reason: R takes the reviewer to it (the form's own button then sends it).
        var read = currentRead();
        var reason = read && read.querySelector("form.reject-form select");
        if (reason) { reason.scrollIntoView({block: "center"}); reason.focus(); handled = true; }
        break;
      }
      case "w": case "W":
        window.location.href = "/"; handled = true;
        break;
      case "h": case "H":
        window.location.href = "/history"; handled = true;
        break;
    }
    if (handled) event.preventDefault();
  });
})();
