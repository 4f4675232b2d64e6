/* Media Support Assistant: the website chat widget. Plain JavaScript, no build step, nothing
 * loaded from any other host. One tag on any page adds a launcher and a chat panel:
 *
 *   <script src="https://support.example/widget.js" data-key="pk_..." defer></script>
 *
 * Optional attributes: data-title (the panel's heading), data-api (the API's origin when it is
 * not the one widget.js is served from).
 *
 * It asks POST /question/stream (server-sent events read from fetch), shows each answer's
 * sources as links, sends thumbs up and down to POST /feedback, and keeps the conversation in
 * sessionStorage, so it survives a reload of the page (until the tab is closed or it is
 * restarted). Its styles live in a constructed stylesheet adopted by its own shadow root:
 * neither inline styles nor a <style> element, so a strict Content-Security-Policy without
 * 'unsafe-inline' lets it work, and the page's CSS and the widget's do not touch each other.
 */
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script || document.getElementById("msa-widget")) return;
  var api = (script.dataset.api || new URL(script.src).origin).replace(/\/+$/, "");
  var key = script.dataset.key || "";
  var title = script.dataset.title || "Support";
  var storageKey = "msa-widget:" + api;
  var HANDOFF_QUESTION = "I'd like to talk to a person, please.";

  var CSS = [
    ":host { all: initial; font: 15px/1.45 system-ui, -apple-system, 'Segoe UI', sans-serif; color: #1d2430; }",
    ".launcher { position: fixed; right: 20px; bottom: 20px; z-index: 2147483000; border: 0; border-radius: 28px;",
    "  padding: 14px 20px; background: #2f5bea; color: #fff; font: inherit; font-weight: 600; cursor: pointer;",
    "  box-shadow: 0 4px 14px rgba(0,0,0,.25); }",
    ".launcher:focus-visible, button:focus-visible, textarea:focus-visible, a:focus-visible { outline: 3px solid #f5a623; outline-offset: 2px; }",
    ".panel { position: fixed; right: 20px; bottom: 84px; z-index: 2147483000; width: min(380px, calc(100vw - 40px));",
    "  height: min(560px, calc(100vh - 110px)); display: flex; flex-direction: column; background: #fff;",
    "  border-radius: 12px; box-shadow: 0 8px 30px rgba(0,0,0,.3); overflow: hidden; }",
    ".panel[hidden] { display: none; }",
    "header { display: flex; align-items: center; gap: 8px; padding: 12px 14px; background: #2f5bea; color: #fff; }",
    "header h2 { flex: 1; margin: 0; font-size: 16px; }",
    "header button { background: transparent; color: #fff; border: 1px solid rgba(255,255,255,.6); border-radius: 6px;",
    "  padding: 4px 8px; font: inherit; font-size: 13px; cursor: pointer; }",
    ".log { flex: 1; overflow-y: auto; padding: 12px; display: flex; flex-direction: column; gap: 10px; background: #f5f7fb; }",
    ".msg { max-width: 88%; padding: 8px 11px; border-radius: 10px; white-space: pre-wrap; word-wrap: break-word; }",
    ".msg.customer { align-self: flex-end; background: #2f5bea; color: #fff; }",
    ".msg.assistant { align-self: flex-start; background: #fff; border: 1px solid #dde3ee; }",
    ".msg.error { align-self: center; background: #fdecea; color: #8a1c12; }",
    ".msg .text p { margin: 0 0 6px; white-space: pre-wrap; } .msg .text > :last-child { margin-bottom: 0; }",
    ".msg .text ul, .msg .text ol { margin: 0 0 6px; padding-left: 20px; white-space: normal; }",
    ".sources { margin: 6px 0 0; padding: 0 0 0 18px; font-size: 13px; }",
    ".sources a { color: #2146c7; }",
    ".votes { display: flex; gap: 6px; margin-top: 6px; align-items: center; font-size: 13px; color: #4a5568; }",
    ".votes button { border: 1px solid #c7d0df; background: #fff; border-radius: 6px; padding: 2px 8px; cursor: pointer; font: inherit; }",
    ".votes button[aria-pressed='true'] { background: #e6edff; border-color: #2f5bea; }",
    "form { display: flex; gap: 6px; padding: 10px; border-top: 1px solid #dde3ee; background: #fff; }",
    "textarea { flex: 1; resize: none; height: 40px; padding: 8px; border: 1px solid #c7d0df; border-radius: 8px; font: inherit; }",
    "form button, .person { border: 0; border-radius: 8px; padding: 0 14px; background: #2f5bea; color: #fff; font: inherit; cursor: pointer; }",
    ".person { margin: 0 10px 10px; padding: 8px; background: #fff; color: #2f5bea; border: 1px solid #2f5bea; }",
    "button:disabled { opacity: .6; cursor: default; }",
    ".sr-only { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); }",
  ].join("\n");

  function load() {
    try {
      var saved = JSON.parse(sessionStorage.getItem(storageKey) || "null");
      if (saved && Array.isArray(saved.messages)) return saved;
    } catch (ignored) { /* a corrupt or blocked storage starts a new conversation */ }
    return { sessionId: null, messages: [], open: false };
  }
  var state = load();
  function save() {
    try { sessionStorage.setItem(storageKey, JSON.stringify(state)); } catch (ignored) { /* private mode: this page view only */ }
  }

  function el(tag, attributes, text) {
    var node = document.createElement(tag);
    Object.keys(attributes || {}).forEach(function (name) { node.setAttribute(name, attributes[name]); });
    if (text) node.textContent = text;
    return node;
  }

  var host = el("div", { id: "msa-widget" });
  var root = host.attachShadow({ mode: "open" });
  var sheet = new CSSStyleSheet();
  sheet.replaceSync(CSS);
  root.adoptedStyleSheets = [sheet];

  var launcher = el("button", { class: "launcher", type: "button", "aria-expanded": "false", "aria-controls": "msa-panel" }, "Chat with us");
  var panel = el("section", { id: "msa-panel", class: "panel", role: "dialog", "aria-modal": "false", "aria-labelledby": "msa-title", hidden: "" });
  var header = el("header");
  var heading = el("h2", { id: "msa-title" }, title);
  var restart = el("button", { type: "button", class: "restart" }, "Restart");
  var close = el("button", { type: "button", class: "close", "aria-label": "Close chat" }, "Close");
  header.append(heading, restart, close);
  var log = el("div", { class: "log", role: "log", "aria-live": "polite", "aria-label": "Conversation" });
  var person = el("button", { type: "button", class: "person" }, "Talk to a person");
  var form = el("form");
  var label = el("label", { for: "msa-input", class: "sr-only" }, "Your question");
  var input = el("textarea", { id: "msa-input", rows: "1", maxlength: "2000", placeholder: "Ask a question…" });
  var send = el("button", { type: "submit" }, "Send");
  form.append(label, input, send);
  panel.append(header, log, person, form);
  root.append(launcher, panel);

  function safeUrl(url) {
    try {
      var parsed = new URL(url);
      return parsed.protocol === "https:" || parsed.protocol === "http:" ? parsed.href : null;
    } catch (ignored) { return null; }
  }

  // Answers are the knowledge base's Markdown as written. A safe subset becomes elements:
  // paragraphs, lists, bold, italics, code and http(s) links; a backslash-escaped mark is the
  // mark itself ("\# of screens"). Everything else stays text, and no HTML is ever parsed,
  // so an entry cannot inject markup into the business's page. An underscore inside a word
  // (my_file_name) is not italics, as in CommonMark.
  var INLINE = new RegExp([
    "\\*\\*([^*]+)\\*\\*|__([^_]+)__",
    "`([^`]+)`",
    "\\[([^\\]]+)\\]\\(([^)\\s]+)\\)",
    "\\*([^*\\s](?:[^*]*[^*\\s])?)\\*|(?<![\\w\\\\])_([^_\\s](?:[^_]*[^_\\s])?)_(?!\\w)",
    "\\\\([\\\\`*_{}\\[\\]()#+\\-.!|>])"
  ].join("|"), "g");
  function inline(parent, text) {
    var last = 0, match;
    INLINE.lastIndex = 0;
    while ((match = INLINE.exec(text))) {
      parent.append(text.slice(last, match.index));
      if (match[1] || match[2]) parent.append(el("strong", {}, match[1] || match[2]));
      else if (match[3]) parent.append(el("code", {}, match[3]));
      else if (match[6] || match[7]) parent.append(el("em", {}, match[6] || match[7]));
      else if (match[8]) parent.append(match[8]);
      else {
        var href = safeUrl(match[5]);
        parent.append(href ? el("a", { href: href, target: "_blank", rel: "noopener noreferrer" }, match[4]) : match[4]);
      }
      last = INLINE.lastIndex;
    }
    parent.append(text.slice(last));
  }

  function markdown(parent, text) {
    var list = null;
    text.split(/\r?\n/).forEach(function (line) {
      var item = /^\s*(?:[-*+]|(\d+)[.)])\s+(.*)$/.exec(line);
      if (item) {
        var kind = item[1] ? "ol" : "ul";
        if (!list || list.tagName.toLowerCase() !== kind) {
          // A numbered list broken by another line goes on from its own number.
          list = el(kind, item[1] && item[1] !== "1" ? { start: item[1] } : {});
          parent.append(list);
        }
        var entry = el("li");
        inline(entry, item[2]);
        list.append(entry);
        return;
      }
      list = null;
      if (!line.trim()) return;
      var paragraph = el("p");
      inline(paragraph, line.replace(/^#{1,6}\s+/, ""));
      parent.append(paragraph);
    });
  }

  function vote(message, value, buttons, note) {
    message.vote = value;
    save();
    buttons.forEach(function (b) { b.setAttribute("aria-pressed", String(Number(b.dataset.value) === value)); });
    note.textContent = "Sending…";
    request("/feedback", { conversation_id: message.conversationId, feedback: value })
      .then(function (response) {
        note.textContent = response.ok ? "Thanks for your feedback." : "Your vote could not be saved.";
      })
      .catch(function () { note.textContent = "Your vote could not be saved."; });
  }

  function render(message) {
    var node = el("div", { class: "msg " + message.role });
    var text = el("div", { class: "text" });
    if (message.role === "assistant") markdown(text, message.text);
    else text.textContent = message.text;
    node.append(text);
    if (message.role === "assistant" && message.sources && message.sources.length) {
      var list = el("ul", { class: "sources", "aria-label": "Sources" });
      message.sources.forEach(function (source) {
        var item = el("li");
        var href = source.url && safeUrl(source.url);
        item.append(href ? el("a", { href: href, target: "_blank", rel: "noopener noreferrer" }, source.question) : el("span", {}, source.question));
        list.append(item);
      });
      node.append(list);
    }
    if (message.role === "assistant" && message.conversationId) {
      var votes = el("div", { class: "votes" });
      var note = el("span", { class: "vote-note", role: "status" }, message.vote ? "Thanks for your feedback." : "");
      var up = el("button", { type: "button", class: "up", "data-value": "1", "aria-pressed": String(message.vote === 1) }, "+1 Helpful");
      var down = el("button", { type: "button", class: "down", "data-value": "-1", "aria-pressed": String(message.vote === -1) }, "-1 Not helpful");
      [up, down].forEach(function (button) {
        button.addEventListener("click", function () { vote(message, Number(button.dataset.value), [up, down], note); });
      });
      votes.append(up, down, note);
      node.append(votes);
    }
    log.append(node);
    log.scrollTop = log.scrollHeight;
    return text;
  }

  function renderAll() {
    log.replaceChildren();
    if (!state.messages.length) render({ role: "assistant", text: "Hello! How can we help you today?" });
    state.messages.forEach(render);
  }

  function request(path, body, signal) {
    var headers = { "Content-Type": "application/json" };
    if (key) headers["X-API-Key"] = key;
    return fetch(api + path, { method: "POST", headers: headers, body: JSON.stringify(body), signal: signal, credentials: "omit" });
  }

  // Server-sent events from a fetch body: "event: name\ndata: json\n\n" blocks.
  function readEvents(response, onEvent) {
    var reader = response.body.getReader();
    var decoder = new TextDecoder();
    var buffer = "";
    function pump() {
      return reader.read().then(function (chunk) {
        buffer += decoder.decode(chunk.value || new Uint8Array(), { stream: !chunk.done });
        var blocks = buffer.split(/\r?\n\r?\n/);
        buffer = chunk.done ? "" : blocks.pop();
        blocks.forEach(function (block) {
          var name = "message", data = [];
          block.split(/\r?\n/).forEach(function (line) {
            if (line.indexOf("event:") === 0) name = line.slice(6).trim();
            else if (line.indexOf("data:") === 0) data.push(line.slice(5).replace(/^ /, ""));
          });
          if (data.length) onEvent(name, JSON.parse(data.join("\n")));
        });
        return chunk.done ? null : pump();
      });
    }
    return pump();
  }

  function busy(on) {
    [send, person, restart].forEach(function (b) { b.disabled = on; });
    log.setAttribute("aria-busy", String(on));
  }

  function ask(question) {
    question = question.trim();
    if (!question) return;
    state.messages.push({ role: "customer", text: question });
    save();
    render(state.messages[state.messages.length - 1]);
    var pending = render({ role: "assistant", text: "…" });
    var written = "";
    busy(true);
    request("/question/stream", { question: question, session_id: state.sessionId })
      .then(function (response) {
        if (!response.ok) {
          return response.json().then(function (body) { throw new Error(body.error ? body.error.message : "HTTP " + response.status); });
        }
        var answered = false;
        return readEvents(response, function (name, data) {
          // Formatted as it arrives, not once complete: only a `**` whose pair is still to come shows.
          if (name === "delta") { written += data.text; pending.replaceChildren(); markdown(pending, written); }
          else if (name === "reset") { written = ""; pending.textContent = "…"; }
          else if (name === "error") { throw new Error(data.error.message); }
          else if (name === "answer") {
            answered = true;
            state.sessionId = data.session_id;
            state.messages.push({ role: "assistant", text: data.answer, sources: data.sources || [], conversationId: data.conversation_id, status: data.status, vote: null });
            save();
          }
        }).then(function () { if (!answered) throw new Error("the answer was cut short"); });
      })
      .then(renderAll)
      .catch(function (error) {
        pending.parentNode.className = "msg error";
        pending.textContent = "Sorry, something went wrong (" + error.message + "). Please try again.";
      })
      .then(function () { busy(false); input.focus(); });
  }

  function setOpen(open, quietly) {
    state.open = open;
    save();
    panel.hidden = !open;
    launcher.setAttribute("aria-expanded", String(open));
    if (open) renderAll();
    // Reopened by a reload, the panel must not take the focus from the page.
    if (!quietly) (open ? input : launcher).focus();
  }

  launcher.addEventListener("click", function () { setOpen(panel.hidden); });
  close.addEventListener("click", function () { setOpen(false); });
  panel.addEventListener("keydown", function (event) { if (event.key === "Escape") setOpen(false); });
  restart.addEventListener("click", function () {
    state = { sessionId: null, messages: [], open: true };
    save();
    renderAll();
    input.focus();
  });
  person.addEventListener("click", function () { ask(HANDOFF_QUESTION); });
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var question = input.value;
    input.value = "";
    ask(question);
  });
  input.addEventListener("keydown", function (event) {
    // Enter sends; Shift+Enter starts a new line.
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); form.requestSubmit(); }
  });

  function mount() {
    document.body.append(host);
    if (state.open) setOpen(true, true);
  }
  if (document.body) mount(); else document.addEventListener("DOMContentLoaded", mount);
})();
