// Chat: replies stream in over server-sent events from the website (/chat/{id}/messages/{mid}/events),
// then are replaced by the server-rendered message; Enter sends; stop and votes post without a reload.
(function () {
  "use strict";
  var csrf = document.body.dataset.csrf;
  var active = 0;

  function post(form) {
    return fetch(form.action, {
      method: "POST",
      body: new FormData(form),
      headers: { "X-CSRF-Token": csrf, "Accept": "application/json" },
      credentials: "same-origin"
    }).then(function (response) {
      if (!response.ok) throw new Error("HTTP " + response.status);
      return response.json();
    });
  }

  function refresh(article) {
    var url = article.dataset.fragmentUrl;
    return fetch(url, { headers: { "Accept": "text/html" }, credentials: "same-origin" })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.text();
      })
      .then(function (html) {
        var main = article.querySelector(".message-main");
        main.innerHTML = html;
        startStreams(main);
      });
  }

  function finished(article, state) {
    article.dataset.state = state || article.dataset.state;
    active -= 1;
    if (active > 0) return;
    var composer = document.querySelector("form[data-wait-for-reply]");
    if (!composer) return;
    if (state === "complete" || state === "cancelled") {
      composer.querySelector("[data-testid=send]").disabled = false;
      var wait = composer.querySelector("[data-testid=composer-wait]");
      if (wait) wait.hidden = true;
      composer.removeAttribute("data-wait-for-reply");
      document.dispatchEvent(new CustomEvent("chat:ready"));
    } else {
      window.location.reload();  // the reply failed: the page offers to regenerate it
    }
  }

  function follow(body) {
    var article = body.closest("article");
    article.dataset.fragmentUrl = body.dataset.fragmentUrl;
    var queue = body.querySelector(".queue-status");
    var text = body.querySelector(".stream-text");
    var failure = body.querySelector(".stream-error");
    var done = false;
    var source = new EventSource(body.dataset.streamUrl);
    active += 1;

    function end(state, errorMessage) {
      if (done) return;
      done = true;
      source.close();
      if (errorMessage) {
        failure.textContent = errorMessage;
        failure.hidden = false;
      }
      refresh(article).catch(function () { /* keep what was streamed */ }).then(function () {
        finished(article, state);
      });
    }

    source.addEventListener("open", function () { text.textContent = ""; });  // a reconnect replays
    source.addEventListener("message", function (event) {
      var data;
      try { data = JSON.parse(event.data); } catch (e) { return; }
      if (data.event_type === "pending") {
        queue.textContent = body.dataset.queueText
          .replace("{position}", data.queue_position).replace("{size}", data.queue_size);
      } else if (data.event_type === "token") {
        queue.hidden = true;
        text.textContent += data.text;
      } else if (data.event_type === "message") {
        end(data.message.state);
      } else if (data.event_type === "error") {
        end(data.error === "cancelled" ? "cancelled" : "failed", data.message);
      }
    });
    source.addEventListener("error", function () {
      if (source.readyState === EventSource.CLOSED) end("failed", body.dataset.lostText);
    });
  }

  function startStreams(root) {
    root.querySelectorAll("[data-streaming]").forEach(follow);
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.matches("[data-stop-form]")) {
      event.preventDefault();
      var button = form.querySelector("button");
      button.disabled = true;
      post(form).catch(function () { form.submit(); });  // the stream then ends with the stopped reply
    } else if (form.matches("[data-vote-form]")) {
      event.preventDefault();
      var article = form.closest("article");
      article.dataset.fragmentUrl = article.dataset.fragmentUrl ||
        form.action.replace(/\/vote$/, "/fragment");
      post(form).then(function () { return refresh(article); }).catch(function () { form.submit(); });
    }
  });

  document.querySelectorAll("textarea[data-enter-sends]").forEach(function (area) {
    area.addEventListener("keydown", function (event) {
      if (event.key !== "Enter" || event.shiftKey || event.isComposing) return;
      event.preventDefault();
      var send = area.form.querySelector("button[type=submit].primary");
      if (send && send.disabled) return;
      if (area.value.trim()) area.form.requestSubmit();
    });
  });

  startStreams(document);
})();
