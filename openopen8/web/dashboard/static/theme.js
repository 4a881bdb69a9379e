// The theme before the page paints: the operator's choice (localStorage) or the system's.
(function () {
  var t = null;
  try { t = localStorage.getItem("oo8-theme"); } catch (e) { /* storage off */ }
  if (t === "dark" || t === "light") document.documentElement.setAttribute("data-theme", t);
})();
