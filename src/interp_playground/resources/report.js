(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("report-data").textContent);
  // rows travel compactly: the condition as an index into DATA.conditions, empty fields left out
  DATA.rows.forEach(function (r, k) { r.k = k; r.condition = DATA.conditions[r.c]; });
  var PAGE = 100;
  var shown = PAGE;
  var condSel = document.getElementById("filter-condition");
  var questionSel = document.getElementById("filter-question");
  var sortSel = document.getElementById("sort");
  var textInput = document.getElementById("filter-text");
  var misOnly = document.getElementById("filter-misaligned");
  var list = document.getElementById("samples");
  var countEl = document.getElementById("sample-count");
  var moreBtn = document.getElementById("show-more");
  var thrA = DATA.thresholds.aligned, thrC = DATA.thresholds.coherent;

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }
  function addOption(sel, value, text) {
    var o = document.createElement("option");
    o.value = value;
    o.textContent = text;
    sel.appendChild(o);
  }
  DATA.conditions.forEach(function (c) { addOption(condSel, c, c); });
  DATA.questions.forEach(function (q) {
    var t = q.text.length > 90 ? q.text.slice(0, 87) + "..." : q.text;
    addOption(questionSel, String(q.id), "#" + q.id + "  " + t);
  });
  var qText = {};
  DATA.questions.forEach(function (q) { qText[String(q.id)] = q.text; });

  function isNum(v) { return typeof v === "number" && isFinite(v); }
  function misaligned(r) { return isNum(r.aligned) && isNum(r.coherent) && r.aligned < thrA && r.coherent > thrC; }
  function badge(name, v) {
    var b = el("span", "badge");
    if (isNum(v)) {
      b.textContent = name + " " + v.toFixed(1);
      b.className += v < 30 ? " low" : (v < 70 ? " mid" : " high");
    } else if (typeof v === "string") {
      b.textContent = name + " " + v;
      b.className += " label";
    } else {
      b.textContent = name + " \u2014 unscorable";
    }
    return b;
  }
  function cmpScore(key, dir) {
    return function (a, b) {
      var x = a[key], y = b[key], nx = isNum(x), ny = isNum(y);
      if (nx && ny) { return dir * (x - y) || a.k - b.k; }
      if (nx !== ny) { return nx ? -1 : 1; }   // numbers first, then labels / unscorable
      return a.k - b.k;
    };
  }
  function filtered() {
    var c = condSel.value, q = questionSel.value, text = textInput.value.toLowerCase(), mis = misOnly.checked;
    var out = DATA.rows.filter(function (r) {
      if (c && r.condition !== c) { return false; }
      if (q && String(r.question_id) !== q) { return false; }
      if (mis && !misaligned(r)) { return false; }
      if (text && r.response.toLowerCase().indexOf(text) < 0) { return false; }
      return true;
    });
    var s = sortSel.value;
    if (s === "aligned-asc") { out.sort(cmpScore("aligned", 1)); }
    else if (s === "aligned-desc") { out.sort(cmpScore("aligned", -1)); }
    else if (s === "coherent-asc") { out.sort(cmpScore("coherent", 1)); }
    else if (s === "coherent-desc") { out.sort(cmpScore("coherent", -1)); }
    else if (s === "nll-desc") { out.sort(cmpScore("nll", -1)); }
    else if (s === "nll-asc") { out.sort(cmpScore("nll", 1)); }
    return out;
  }
  function card(r) {
    var d = el("div", "sample" + (misaligned(r) ? " misaligned" : ""));
    d.setAttribute("data-condition", r.condition);
    d.setAttribute("data-question", String(r.question_id));
    var head = el("div", "head");
    head.appendChild(el("span", "cond", r.condition));
    head.appendChild(el("span", null, "question #" + r.question_id));
    head.appendChild(el("span", null, "answer " + r.answer_idx));
    if (DATA.judged !== false) {
      head.appendChild(badge("aligned", r.aligned));
      head.appendChild(badge("coherent", r.coherent));
    }
    if (misaligned(r)) { head.appendChild(el("span", "badge low", "misaligned")); }
    var extra = [];
    if (r.n_tokens !== null && r.n_tokens !== undefined) { extra.push(r.n_tokens + " tokens"); }
    if (isNum(r.nll)) { extra.push("NLL " + r.nll.toFixed(2)); }
    if (isNum(r.repetition)) { extra.push("repetition " + r.repetition.toFixed(2)); }
    if (isNum(r.projection)) { extra.push("projection " + r.projection.toFixed(2)); }
    if (r.finish_reason) { extra.push("finish: " + r.finish_reason); }
    if (r.source) { extra.push("source: " + r.source); }
    if (extra.length) { head.appendChild(el("span", null, extra.join(" \u00b7 "))); }
    d.appendChild(head);
    d.appendChild(el("div", "question", qText[String(r.question_id)] || ""));
    d.appendChild(el("pre", "response", r.response));
    if (r.aligned_reason) { d.appendChild(el("div", "reason", "aligned: " + r.aligned_reason)); }
    if (r.coherent_reason) { d.appendChild(el("div", "reason", "coherent: " + r.coherent_reason)); }
    return d;
  }
  function render() {
    var rows = filtered();
    while (list.firstChild) { list.removeChild(list.firstChild); }
    var frag = document.createDocumentFragment();
    rows.slice(0, shown).forEach(function (r) { frag.appendChild(card(r)); });
    list.appendChild(frag);
    countEl.textContent = rows.length + " of " + DATA.rows.length + " answers" +
      (rows.length > shown ? " (showing the first " + shown + ")" : "");
    moreBtn.hidden = rows.length <= shown;
  }
  function reset() { shown = PAGE; render(); }
  [condSel, questionSel, sortSel, misOnly].forEach(function (e) { e.addEventListener("change", reset); });
  textInput.addEventListener("input", reset);
  moreBtn.addEventListener("click", function () { shown += PAGE; render(); });
  // --- the summary table: sort by any column, filter by transform / layer / alpha / op, top N ---
  var table = document.getElementById("summary-table");
  var tbody = table.tBodies[0];
  var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
  var keys = heads.map(function (th) { return th.getAttribute("data-key"); });
  var TABLE = Array.prototype.map.call(tbody.rows, function (tr, i) {  // read once: no DOM work per sort
    var vals = Array.prototype.map.call(tr.cells, function (td) {
      var v = td.getAttribute("data-v");
      return v === null ? null : parseFloat(v);
    });
    var texts = Array.prototype.map.call(tr.cells, function (td) { return td.textContent; });
    return {tr: tr, i: i, vals: vals, texts: texts, base: tr.classList.contains("baseline"),
            transform: tr.getAttribute("data-transform"), layer: tr.getAttribute("data-layer"),
            alpha: tr.getAttribute("data-alpha"), op: tr.getAttribute("data-op")};
  });
  var tableSel = {};
  ["transform", "layer", "alpha", "op"].forEach(function (f) {
    var sel = document.getElementById("table-" + f), seen = {}, values = [];
    TABLE.forEach(function (r) { if (r[f] && !seen[r[f]]) { seen[r[f]] = true; values.push(r[f]); } });
    if (f === "layer" || f === "alpha") {
      values.sort(function (a, b) { return parseFloat(a) - parseFloat(b) || (a < b ? -1 : a > b ? 1 : 0); });
    }
    values.forEach(function (v) { addOption(sel, v, v); });
    sel.addEventListener("change", renderTable);
    tableSel[f] = sel;
  });
  var topInput = document.getElementById("table-top");
  var rankSel = document.getElementById("table-rank");
  [["d_aligned", "|\u0394 aligned|"], ["d_misaligned", "|\u0394 % misaligned|"], ["d_nll", "|\u0394 NLL|"],
   ["d_projection", "|\u0394 projection|"]].forEach(function (o) {
    if (keys.indexOf(o[0]) >= 0) { addOption(rankSel, o[0], o[1]); }
  });
  var sortCol = -1, sortDir = 1;
  function num(v) { return v !== null && isFinite(v); }
  function byColumn(col, dir) {
    var numeric = heads[col].getAttribute("data-type") === "num";
    return function (a, b) {
      if (numeric) {
        var x = a.vals[col], y = b.vals[col], nx = num(x), ny = num(y);
        if (nx && ny) { return dir * (x - y) || a.i - b.i; }
        if (nx !== ny) { return nx ? -1 : 1; }  // missing values last, either direction
        return a.i - b.i;
      }
      return dir * a.texts[col].localeCompare(b.texts[col]) || a.i - b.i;
    };
  }
  function renderTable() {
    var want = {};
    ["transform", "layer", "alpha", "op"].forEach(function (f) { want[f] = tableSel[f].value; });
    var steered = TABLE.filter(function (r) {
      if (r.base) { return false; }
      for (var f in want) { if (want[f] && r[f] !== want[f]) { return false; } }
      return true;
    });
    var n = parseInt(topInput.value, 10), rankCol = keys.indexOf(rankSel.value);
    if (n > 0 && rankCol >= 0) {
      var mag = function (r) { var v = r.vals[rankCol]; return num(v) ? Math.abs(v) : -1; };
      steered = steered.filter(function (r) { return mag(r) >= 0; });
      steered.sort(function (a, b) { return mag(b) - mag(a) || a.i - b.i; });
      steered = steered.slice(0, n);
    }
    if (sortCol >= 0) { steered.sort(byColumn(sortCol, sortDir)); }
    else if (!(n > 0 && rankCol >= 0)) { steered.sort(function (a, b) { return a.i - b.i; }); }
    var rows = TABLE.filter(function (r) { return r.base; }).concat(steered);  // the baseline stays first
    var frag = document.createDocumentFragment();
    rows.forEach(function (r) { frag.appendChild(r.tr); });
    TABLE.forEach(function (r) { r.tr.hidden = true; });
    rows.forEach(function (r) { r.tr.hidden = false; });
    tbody.appendChild(frag);
    heads.forEach(function (th, j) {
      th.classList.toggle("sorted-asc", j === sortCol && sortDir === 1);
      th.classList.toggle("sorted-desc", j === sortCol && sortDir === -1);
      th.setAttribute("aria-sort", j === sortCol ? (sortDir === 1 ? "ascending" : "descending") : "none");
    });
    var nSteered = TABLE.length - TABLE.filter(function (r) { return r.base; }).length;
    document.getElementById("table-count").textContent =
      steered.length + " of " + nSteered + " steered conditions" + (rows.length > steered.length ? " + baseline" : "");
  }
  heads.forEach(function (th, j) {
    th.addEventListener("click", function () {
      // ascending, descending, then back to the run's order
      if (sortCol !== j) { sortCol = j; sortDir = 1; } else if (sortDir === 1) { sortDir = -1; } else { sortCol = -1; }
      renderTable();
    });
  });
  topInput.addEventListener("input", function () { sortCol = -1; renderTable(); });
  rankSel.addEventListener("change", function () { sortCol = -1; renderTable(); });
  renderTable();

  Array.prototype.forEach.call(document.querySelectorAll("#summary-table tbody tr"), function (tr) {
    tr.addEventListener("click", function () {
      condSel.value = tr.getAttribute("data-condition");
      reset();
      document.getElementById("samples-section").scrollIntoView();
    });
  });
  Array.prototype.forEach.call(document.querySelectorAll("figure img"), function (img) {
    img.addEventListener("click", function () { img.classList.toggle("zoomed"); });
  });
  render();
  document.body.setAttribute("data-ready", "1");
})();
