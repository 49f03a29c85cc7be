// Applies the saved light/dark choice before the page paints (no flash of the wrong theme).
(function () {
  var saved = null;
  try { saved = localStorage.getItem("oasst-theme"); } catch (e) { /* storage off */ }
  if (saved === "light" || saved === "dark") document.documentElement.dataset.theme = saved;
})();
