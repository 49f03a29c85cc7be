// The message tree: bring the highlighted message into view (the page may be long).
(function () {
  "use strict";
  var current = document.querySelector('[data-testid="current-message"]');
  if (current && !window.location.hash) {
    current.scrollIntoView({ block: "center" });
  }
})();
