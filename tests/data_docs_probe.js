// Injected by tests/test_data_docs.py at the top of a copy of a Data Docs page: once the page
// has loaded and its fonts are ready, write what rendered, as JSON, into a new pre element
// (id sprx-probe; --dump-dom prints it): resources that failed to load, the libraries that
// ran, the tables and rows they drew, and the computed style of a table cell.
window.__failed = [];
window.addEventListener("error", function (e) {
  var t = e.target;
  if (t && t !== window && (t.src || t.href)) window.__failed.push(t.src || t.href);
}, true);
window.addEventListener("load", function () {
  document.fonts.ready.then(function () { setTimeout(function () {
    var cell = document.querySelector("table tbody td");
    var style = cell ? getComputedStyle(cell) : null;
    var found = {
      failed: window.__failed,
      jquery: window.jQuery ? window.jQuery.fn.jquery : null,
      bootstrap_table: !!(window.jQuery && window.jQuery.fn.bootstrapTable),
      vega: window.vega ? window.vega.version : null,
      tables: document.querySelectorAll("table").length,
      rows: document.querySelectorAll("table tbody tr").length,
      wrapped: document.querySelectorAll("div.bootstrap-table").length,
      cell_padding: style && style.paddingTop,
      cell_border: style && style.borderTopWidth + " " + style.borderTopStyle,
      font_awesome: Array.from(document.fonts).some(function (f) {
        return f.family.replace(/"/g, "") === "Font Awesome 6 Free" && f.status === "loaded";
      }),
      status_icons: document.querySelectorAll(
        "table tbody tr .fa-check-circle, table tbody tr .fa-times").length
    };
    var out = document.createElement("pre");
    out.id = "sprx-probe";
    out.textContent = JSON.stringify(found);
    document.body.appendChild(out);
  }, 200); });
});
