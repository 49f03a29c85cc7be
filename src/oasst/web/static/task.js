// Task pages: edit → review → submit, the Markdown preview, ranking (handle drag, buttons, keys, typed
// order) and label shortcuts. Everything here enhances forms that also work without script.
(function () {
  "use strict";

  var csrf = document.body.dataset.csrf;
  var form = document.getElementById("task-form");
  var skipPanel = document.getElementById("skip-panel");

  // -- the first-task tutorial: dismiss without leaving the task ---------------------------------
  var tutorialForm = document.getElementById("tutorial-form");
  if (tutorialForm) {
    tutorialForm.addEventListener("submit", function (event) {
      event.preventDefault();
      fetch(tutorialForm.action, { method: "POST", body: new FormData(tutorialForm), redirect: "manual",
        credentials: "same-origin" });
      var card = document.getElementById("tutorial");
      if (card) card.hidden = true;
    });
  }

  function openSkip() {
    if (!skipPanel) return;
    skipPanel.open = true;
    var select = skipPanel.querySelector("select");
    if (select) select.focus();
  }

  if (!form) {
    document.addEventListener("keydown", function (event) {
      if (event.altKey && event.code === "KeyS") { event.preventDefault(); openSkip(); }
    });
    return;
  }

  var group = form.dataset.group;
  var editArea = document.getElementById("task-edit");
  var reviewPanel = document.getElementById("review-panel");
  var reviewBody = document.getElementById("review-body");
  var reviewButton = document.getElementById("review-button");
  var editButton = document.getElementById("edit-button");
  var submitButton = document.getElementById("submit-button");
  var clientError = document.getElementById("client-error");
  var unchangedField = document.getElementById("unchanged-ok-field");
  var dialog = document.getElementById("unchanged-dialog");
  var mode = "edit";

  function showError(message) {
    clientError.textContent = message;
    clientError.hidden = !message;
  }

  function setMode(next) {
    mode = next;
    var reviewing = next === "review";
    editArea.hidden = reviewing;
    reviewPanel.hidden = !reviewing;
    reviewButton.hidden = reviewing;
    editButton.hidden = !reviewing;
    submitButton.hidden = !reviewing;
    form.dataset.mode = next;
    (reviewing ? submitButton : reviewButton).focus();
  }

  // -- create: editor, preview, word goal, language hint -------------------------------------------
  var textarea = document.getElementById("reply-text");
  var preview = document.getElementById("preview");

  function renderPreview(text) {
    return fetch("/tasks/preview", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf, "Accept": "application/json" },
      body: JSON.stringify({ text: text })
    }).then(function (response) {
      if (!response.ok) throw new Error("preview failed");
      return response.json();
    }).then(function (data) { return data.html; });  // sanitised on the server (nh3)
  }

  var SCRIPTS = [
    ["Arabic", /[\u0600-\u06FF]/], ["Cyrillic", /[\u0400-\u04FF]/], ["Greek", /[\u0370-\u03FF]/],
    ["Hebrew", /[\u0590-\u05FF]/], ["Devanagari", /[\u0900-\u097F]/], ["Thai", /[\u0E00-\u0E7F]/],
    ["Hangul", /[\uAC00-\uD7AF]/], ["Kana", /[\u3040-\u30FF]/], ["Han", /[\u4E00-\u9FFF]/],
    ["Latin", /[A-Za-z\u00C0-\u024F]/]
  ];
  var LANG_SCRIPTS = {
    ar: ["Arabic"], fa: ["Arabic"], ur: ["Arabic"], ru: ["Cyrillic"], uk: ["Cyrillic"], bg: ["Cyrillic"],
    el: ["Greek"], he: ["Hebrew"], hi: ["Devanagari"], mr: ["Devanagari"], th: ["Thai"], ko: ["Hangul"],
    zh: ["Han"], ja: ["Kana", "Han"]
  };
  var STOPWORDS = {
    en: "the and is are of to you what how in it that for with this can my do".split(" "),
    de: "der die das und ist nicht ich ein eine zu wie mit für auf den ich sie es".split(" "),
    es: "el la los las que y es en un una por para cómo qué con no se lo".split(" "),
    fr: "le la les et est des un une que pour dans je vous comment pas avec ce il".split(" "),
    it: "il lo gli e è di che un una per come non con sono mi si".split(" "),
    pt: "o os e é de que um uma para não como você com se do da".split(" "),
    nl: "de het een en is van niet ik je wat hoe met voor op zijn".split(" ")
  };

  function dominantScript(text) {
    var counts = {};
    var best = null;
    for (var i = 0; i < text.length; i++) {
      for (var s = 0; s < SCRIPTS.length; s++) {
        if (SCRIPTS[s][1].test(text[i])) {
          var name = SCRIPTS[s][0];
          counts[name] = (counts[name] || 0) + 1;
          if (!best || counts[name] > counts[best]) best = name;
          break;
        }
      }
    }
    return best;
  }

  // A rough guess, only to warn: the script must fit, and Latin text must not look like another language.
  function looksLikeOtherLanguage(text, lang) {
    var words = text.toLowerCase().split(/[^\p{L}]+/u).filter(Boolean);
    if (words.length <= 4) return false;
    var base = lang.split("-")[0];
    var script = dominantScript(text);
    var expected = LANG_SCRIPTS[base] || ["Latin"];
    if (script && expected.indexOf(script) < 0) return true;
    if (script !== "Latin" || !STOPWORDS[base]) return false;
    var hits = {};
    Object.keys(STOPWORDS).forEach(function (code) {
      hits[code] = words.filter(function (w) { return STOPWORDS[code].indexOf(w) >= 0; }).length;
    });
    var best = Object.keys(hits).sort(function (a, b) { return hits[b] - hits[a]; })[0];
    return best !== base && hits[best] >= 2 && hits[base] * 2 < hits[best];
  }

  function updateEditorMeta() {
    var text = textarea.value;
    var words = text.trim() ? text.trim().split(/\s+/).length : 0;
    var goal = document.getElementById("word-goal");
    goal.value = Math.min(words, 50);
    goal.classList.remove("low", "mid", "done");
    goal.classList.add(words < 20 ? "low" : words < 40 ? "mid" : "done");
    document.getElementById("word-count").textContent = String(words);
    var hint = document.getElementById("lang-hint");
    var wrong = looksLikeOtherLanguage(text, form.dataset.lang || "en");
    hint.hidden = !wrong;
    hint.textContent = wrong ? hint.dataset.message : "";
  }

  if (textarea) {
    var tabs = document.getElementById("editor-tabs");
    tabs.hidden = false;
    tabs.addEventListener("click", function (event) {
      var tab = event.target.closest("[data-tab]");
      if (!tab) return;
      var previewing = tab.dataset.tab === "preview";
      tabs.querySelectorAll("[data-tab]").forEach(function (t) {
        t.setAttribute("aria-selected", String(t === tab));
      });
      textarea.hidden = previewing;
      preview.hidden = !previewing;
      if (previewing) {
        preview.textContent = "…";
        renderPreview(textarea.value).then(function (html) { preview.innerHTML = html; },
          function () { preview.textContent = form.dataset.msgPreviewFailed; });
      } else {
        textarea.focus();
      }
    });
    textarea.addEventListener("input", updateEditorMeta);
    updateEditorMeta();
  }

  // -- rank: one order, shown and submitted -----------------------------------------------------------
  var list = document.getElementById("rank-list");
  var rankingField = document.getElementById("ranking-field");
  var typed = document.getElementById("typed-order");
  var typedStatus = document.getElementById("typed-order-status");
  var notRankable = form.querySelector("[name=not_rankable]");

  function items() { return Array.prototype.slice.call(list.querySelectorAll(".rank-item")); }
  function currentOrder() { return items().map(function (li) { return Number(li.dataset.index); }); }

  // Every change goes through here, so the hidden field is always the order on screen.
  function sync(fromTyped) {
    var order = currentOrder();
    rankingField.value = order.join(",");
    items().forEach(function (li, position) {
      li.querySelector(".rank-position").textContent = String(position + 1);
      li.querySelector(".move-up").disabled = position === 0;
      li.querySelector(".move-down").disabled = position === order.length - 1;
    });
    if (!fromTyped) {
      typed.value = order.map(function (i) { return i + 1; }).join(",");
      typed.setCustomValidity("");
      typedStatus.textContent = "";
    }
  }

  function moveTo(li, position, keepFocus) {
    var all = items();
    position = Math.max(0, Math.min(position, all.length - 1));
    var others = all.filter(function (other) { return other !== li; });
    list.insertBefore(li, others[position] || null);
    sync(false);
    if (keepFocus) li.focus();
  }

  function parseTyped(raw, count) {
    var parts = raw.split(/[\s,;]+/).filter(Boolean);
    if (parts.length !== count || !parts.every(function (p) { return /^\d+$/.test(p); })) return null;
    var order = parts.map(function (p) { return Number(p) - 1; });
    var sorted = order.slice().sort(function (a, b) { return a - b; });
    return sorted.every(function (v, i) { return v === i; }) ? order : null;
  }

  function applyTyped() {
    if (!typed.value.trim()) { typedStatus.textContent = ""; typed.setCustomValidity(""); return true; }
    var order = parseTyped(typed.value, items().length);
    if (!order) {
      typedStatus.textContent = typed.placeholder;
      typed.setCustomValidity(typed.placeholder);
      return false;
    }
    var byIndex = {};
    items().forEach(function (li) { byIndex[li.dataset.index] = li; });
    order.forEach(function (index) { list.appendChild(byIndex[index]); });
    typed.setCustomValidity("");
    typedStatus.textContent = "";
    sync(true);
    return true;
  }

  if (list) {
    list.addEventListener("click", function (event) {
      var button = event.target.closest(".move-up, .move-down");
      if (!button) return;
      event.preventDefault();
      var li = button.closest(".rank-item");
      var at = items().indexOf(li);
      moveTo(li, button.classList.contains("move-up") ? at - 1 : at + 1, false);
      button.focus();
    });
    list.addEventListener("keydown", function (event) {
      var li = event.target;
      if (!li.classList || !li.classList.contains("rank-item") || event.ctrlKey || event.metaKey || event.altKey) return;
      var at = items().indexOf(li);
      if (event.key === "ArrowUp" || event.key === "ArrowDown") {
        event.preventDefault();
        moveTo(li, event.key === "ArrowUp" ? at - 1 : at + 1, true);
      } else if (/^[1-9]$/.test(event.key)) {
        event.preventDefault();
        moveTo(li, Number(event.key) - 1, true);
      }
    });
    // Drag only from the handle: the rest of a card scrolls normally on touch screens.
    list.addEventListener("pointerdown", function (event) {
      var handle = event.target.closest(".drag-handle");
      if (!handle || (event.pointerType === "mouse" && event.button !== 0)) return;
      event.preventDefault();
      var li = handle.closest(".rank-item");
      var pointerId = event.pointerId;
      handle.setPointerCapture(pointerId);
      li.classList.add("dragging");
      // Moving the card in the list releases the handle's pointer capture, so the rest of the drag is
      // followed on the document (by pointer id), not on the handle.
      function onMove(moveEvent) {
        if (moveEvent.pointerId !== pointerId) return;
        var others = items().filter(function (other) { return other !== li; });
        var target = null;
        for (var i = 0; i < others.length; i++) {
          var box = others[i].getBoundingClientRect();
          if (moveEvent.clientY < box.top + box.height / 2) { target = others[i]; break; }
        }
        if (target === null ? li !== list.lastElementChild : li.nextElementSibling !== target) {
          list.insertBefore(li, target);
          sync(false);
        }
      }
      function onEnd(endEvent) {
        if (endEvent.pointerId !== pointerId) return;
        li.classList.remove("dragging");
        document.removeEventListener("pointermove", onMove);
        document.removeEventListener("pointerup", onEnd);
        document.removeEventListener("pointercancel", onEnd);
        sync(false);
        li.focus();
      }
      document.addEventListener("pointermove", onMove);
      document.addEventListener("pointerup", onEnd);
      document.addEventListener("pointercancel", onEnd);
    });
    typed.addEventListener("input", applyTyped);
    typed.addEventListener("keydown", function (event) {
      if (event.key === "Enter" && !event.ctrlKey && !event.metaKey) { event.preventDefault(); applyTyped(); }
    });
    rankingField.value = currentOrder().join(",");
  }

  // -- label: keys on the focused question -------------------------------------------------------------
  function labelRows() { return Array.prototype.slice.call(form.querySelectorAll(".label-row[data-widget]")); }

  form.addEventListener("keydown", function (event) {
    if (group !== "label" || event.ctrlKey || event.metaKey || event.altKey) return;
    var row = document.activeElement && document.activeElement.closest(".label-row[data-widget]");
    if (!row) return;
    var name = row.dataset.name;
    var key = event.key.toLowerCase();
    var value = null;
    if (row.dataset.widget === "yes_no" && (key === "y" || key === "n")) value = key === "y" ? "1" : "0";
    if (row.dataset.widget === "likert" && /^[1-5]$/.test(key)) value = String(Number(key) - 1);
    if (value === null) return;
    var radio = row.querySelector("input[name='label." + name + "'][value='" + value + "']");
    if (radio) { event.preventDefault(); radio.checked = true; radio.focus(); }
  });

  function missingLabels() {
    return labelRows().filter(function (row) {
      return row.dataset.mandatory === "1" && row.dataset.widget !== "flag" &&
        !row.querySelector("input:checked");
    }).map(function (row) { return row.querySelector("legend").textContent.replace("*", "").trim(); });
  }

  // -- review --------------------------------------------------------------------------------------------
  function isUnchanged() {
    if (group === "rank") {
      return currentOrder().every(function (v, i) { return v === i; }) && !(notRankable && notRankable.checked);
    }
    if (group === "label") return !form.querySelector(".task-edit input:checked");
    return false;
  }

  function problem() {
    if (group === "create" && !textarea.value.trim()) return form.dataset.msgEmpty;
    if (group === "rank" && !applyTyped()) return typed.placeholder;
    if (group === "label") {
      var missing = missingLabels();
      if (missing.length) return form.dataset.msgMissing + " " + missing.join("; ");
    }
    return "";
  }

  function fillReview() {
    reviewBody.textContent = "";
    if (group === "create") {
      reviewBody.textContent = "…";
      return renderPreview(textarea.value).then(function (html) { reviewBody.innerHTML = html; },
        function () { reviewBody.textContent = textarea.value; });
    }
    var listing = document.createElement(group === "rank" ? "ol" : "ul");
    if (group === "rank") {
      items().forEach(function (li) {
        var entry = document.createElement("li");
        entry.textContent = li.querySelector(".rank-label").textContent.trim() + " — " +
          li.querySelector(".message-body").textContent.trim().slice(0, 120);
        listing.appendChild(entry);
      });
      if (notRankable && notRankable.checked) {
        var note = document.createElement("li");
        note.textContent = notRankable.parentElement.textContent.trim();
        listing.appendChild(note);
      }
    } else {
      labelRows().concat(Array.prototype.slice.call(form.querySelectorAll(".flag"))).forEach(function (row) {
        var checked = row.querySelector("input:checked");
        if (!checked) return;
        var entry = document.createElement("li");
        var question = row.querySelector("legend") || row.querySelector("label");
        var answer = row.dataset.widget === "flag" ? "✓" : checked.parentElement.textContent.trim();
        entry.textContent = question.textContent.replace("*", "").trim() + ": " + answer;
        listing.appendChild(entry);
      });
    }
    reviewBody.appendChild(listing);
    return Promise.resolve();
  }

  function enterReview() {
    showError("");
    fillReview();
    setMode("review");
  }

  function tryReview() {
    var message = problem();
    showError(message);
    if (message) return;
    if (isUnchanged() && unchangedField.value !== "1" && dialog && dialog.showModal) {
      dialog.showModal();
      return;
    }
    enterReview();
  }

  if (dialog) {
    document.getElementById("unchanged-continue").addEventListener("click", function () {
      unchangedField.value = "1";
      dialog.close();
      enterReview();
    });
    document.getElementById("unchanged-cancel").addEventListener("click", function () { dialog.close(); });
  }

  reviewButton.addEventListener("click", tryReview);
  editButton.addEventListener("click", function () { setMode("edit"); });
  form.addEventListener("submit", function (event) {
    var submitter = event.submitter;
    if (submitter && submitter.name === "move") {  // handled in the page, not by the server
      event.preventDefault();
      if (group === "rank") applyTyped();
      return;
    }
    if (mode !== "review") { event.preventDefault(); tryReview(); return; }
    // one submission, even on a double click (disabled after the browser has read the form)
    setTimeout(function () { submitButton.disabled = true; }, 0);
  });

  form.addEventListener("input", function () { if (!clientError.hidden) showError(""); });

  // Any change after a confirmed "unchanged" answer makes the question moot again.
  form.addEventListener("change", function (event) {
    if (event.target !== typed) unchangedField.value = unchangedField.value === "1" && isUnchanged() ? "1" : "0";
  });

  document.addEventListener("keydown", function (event) {
    if ((event.ctrlKey || event.metaKey) && event.key === "Enter") {
      event.preventDefault();
      if (mode === "review") form.requestSubmit(submitButton); else tryReview();
    } else if (event.key === "Escape" && mode === "review" && !(dialog && dialog.open)) {
      event.preventDefault();
      setMode("edit");
    } else if (event.altKey && event.code === "KeyS") {
      event.preventDefault();
      openSkip();
    }
  });

  // Script is on: the Review step comes before Submit.
  reviewButton.hidden = false;
  submitButton.hidden = true;
  form.dataset.mode = "edit";
  form.dataset.ready = "1";
})();
