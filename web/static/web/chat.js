/*
 * The Companion web chat: a client of the REST API and the websocket, like the mobile app.
 *
 * - Tokens live in memory and in localStorage, so every tab of the browser shares the
 *   session: a sign-in or a sign-out in one tab reaches the others (the `storage` event), and
 *   a refresh in one hands the new pair to all (docs/api.md, "The web page's session", says
 *   what that costs). An expired access token is refreshed with /api/auth/refresh. No token
 *   ever goes in a URL: the socket is opened with a one-time ticket from POST /api/ws-ticket.
 * - The socket reconnects with backoff and sends `resume` with the last finished message it
 *   saw; streamed tokens are kept by `seq`, so a token that arrives twice is shown once.
 * - Every text from the server is set with textContent, never parsed as HTML.
 * - The "Reminders & tasks" panel reads /api/reminders and /api/tasks, and reads them again
 *   when the secretary acts in a reply (an `action` frame) or a reminder arrives.
 */
(function () {
  "use strict";

  var root = document.getElementById("app");
  if (!root) return;
  var API = root.dataset.api || "/api";
  var WS_PATH = root.dataset.wsPath || "/ws/conversations/";
  var STORAGE_KEY = "companion.tokens";
  var PAGE_SIZE = 50;
  var LIST_REFRESH_MS = 60000; // how often the conversation list (unread counts) is read while the page is visible
  // The server's limit on a message (conversations/turns/request.py), handed over in the shell;
  // 0 (an older shell) leaves the refusal to the server.
  var MESSAGE_MAX_CHARS = Number(root.dataset.messageMaxChars) || 0;
  var COUNTER_FROM = 0.9; // the counter shows from this share of the limit
  var REFRESH_MARGIN_MS = 30000;
  var PICTURE_PROMPT_MAX_CHARS = 400;
  var BACKOFF_BASE_MS = 500;
  var BACKOFF_MAX_MS = 15000;
  var CLOSE_IDLE = 4408;
  var TIMEZONE_OFFERED_KEY = "companion.timezoneOffered."; // + user id: the browser's zone is offered once

  var MODE_LABELS = { secretary: "Secretary", intimate: "Intimate" };
  var STATUS_LABELS = {
    streaming: "Writing\u2026",
    cancelled: "Stopped",
    failed: "Failed",
    fallback: "Fallback reply (the model could not answer)",
    pending: "Sending\u2026",
  };
  var ORIGIN_LABELS = { reminder: "Reminder", proactive: "Check-in" };
  var RECURRENCE_LABELS = { daily: "every day", weekdays: "on weekdays", weekly: "every week" };
  // What a failed action was meant to do: "✗ Could not set the reminder: <why>".
  var ACTION_FAILURES = {
    reminder_create: "Could not set the reminder",
    reminder_list: "Could not read your reminders",
    reminder_cancel: "Could not cancel the reminder",
    task_add: "Could not add it to your list",
    task_list: "Could not read your list",
    task_complete: "Could not tick it off",
  };
  var BLOCK_REASONS = {
    adult_required: "intimate mode is for adults, and you have not confirmed your age",
    opt_in_required: "intimate mode is off in your profile",
    avatar_disallows: "this avatar does not offer intimate mode",
    safety: "after a hard moment, intimate mode waits for a calmer turn",
  };
  var BLOCK_REASON_OTHER = "intimate mode is not available right now";
  // One sentence per error code the page may meet (error frames, a failed reply's error_code);
  // any other code reads as the server's own message, else as GENERIC_ERROR. Never the raw code.
  var ERROR_TEXTS = {
    busy: "Wait for the reply to finish, or stop it.",
    throttled: "You are sending messages faster than allowed. Wait a moment, then try again.",
    quota_exceeded: "You have used today's allowance. Your message is saved; replies resume when it resets.",
    unavailable: "The server is having trouble right now. Try again in a moment.",
    turn_error: "Something went wrong on our side. Try again.",
    too_large: "That was too large to send.",
    interrupted: "The reply was interrupted before it finished.",
    llm_not_configured: "No language model is configured on this server.",
    llm_timeout: "The model took too long to answer.",
    llm_unavailable: "The model is unavailable right now.",
    llm_unreachable: "The model cannot be reached right now.",
    llm_rate_limited: "The model is busy. Try again shortly.",
    llm_circuit_open: "The model keeps failing, so calls to it are paused for a moment.",
    llm_content_filtered: "The model's content filter stopped this reply.",
    llm_context_too_long: "This conversation is too long for the model.",
    llm_connection_dropped: "The connection to the model dropped mid-reply.",
    llm_stream_incomplete: "The reply ended before it was finished.",
  };
  var GENERIC_ERROR = "Something went wrong. Try again.";

  function $(id) {
    return document.getElementById(id);
  }

  // Icons drawn as inline SVG, not emoji: an emoji is a box where the font lacks it. Each is
  // decoration next to words (or inside a control with its own label), so hidden from readers.
  var ICON_PATHS = {
    lock: "M5 7V5a3 3 0 0 1 6 0v2M3.5 7h9v7h-9z",
    clock: "M8 2.5a5.5 5.5 0 1 0 0 11a5.5 5.5 0 1 0 0-11zM8 5v3.2l2.2 1.4",
  };

  function icon(name) {
    var ns = "http://www.w3.org/2000/svg";
    var svg = document.createElementNS(ns, "svg");
    svg.setAttribute("class", "icon icon-" + name);
    svg.setAttribute("viewBox", "0 0 16 16");
    svg.setAttribute("width", "1em");
    svg.setAttribute("height", "1em");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    var path = document.createElementNS(ns, "path");
    path.setAttribute("d", ICON_PATHS[name]);
    path.setAttribute("fill", "none");
    path.setAttribute("stroke", "currentColor");
    path.setAttribute("stroke-width", "1.6");
    path.setAttribute("stroke-linecap", "round");
    path.setAttribute("stroke-linejoin", "round");
    svg.append(path);
    return svg;
  }

  var state = {
    tokens: null, // {access, refresh, expiresAt}
    me: null,
    avatars: [],
    conversations: [],
    current: null, // the open conversation, as GET /api/conversations/{id}
    openSeq: 0, // guards against a slow load overwriting a newer one
    nextBefore: null,
    lastSeenId: 0, // the newest finished message shown: what `resume` asks after
    elements: new Map(), // message id -> element
    streams: new Map(), // assistant message id -> {deltas, shown, el}
    pending: new Map(), // client_id -> {frame, el}: sent, not yet stored
    modeRequest: null, // the select value before a set_mode the server may refuse
    reminders: [], // pending, as GET /api/reminders
    tasks: [], // as GET /api/tasks: open ones first
    secretarySeq: 0, // guards against a slow load overwriting a newer one
    memorySeq: 0, // the same, for the remembered facts of the open conversation's avatar
  };

  // --- errors shown to people ---------------------------------------------------------------

  function ApiError(status, body) {
    this.name = "ApiError";
    this.status = status;
    this.body = body || {};
    this.code = this.body.code || "";
    this.message = describeError(this.body, status);
  }
  ApiError.prototype = Object.create(Error.prototype);

  function describeError(body, status) {
    var detail = body && body.detail;
    if (Array.isArray(detail)) {
      return detail
        .map(function (item) {
          var loc = (item.loc || []).filter(function (part) {
            return part !== "body" && part !== "payload";
          });
          return (loc.length ? loc.join(".") + ": " : "") + (item.msg || "is not valid");
        })
        .join("\n");
    }
    if (typeof detail === "string" && detail) return detail;
    if (status === 0) return "Cannot reach the server. Check your connection and try again.";
    return "The server answered " + status + ". Try again in a moment.";
  }

  function showError(id, message) {
    var el = $(id);
    el.textContent = message;
    el.hidden = !message;
  }

  function showBanner(message) {
    showError("banner", message);
  }

  function errorText(code, serverMessage) {
    return ERROR_TEXTS[code] || serverMessage || GENERIC_ERROR;
  }

  function blockReasonText(code) {
    return BLOCK_REASONS[code] || BLOCK_REASON_OTHER;
  }

  // --- tokens and the API ---------------------------------------------------------------------

  function tokensSave(pair) {
    state.tokens = {
      access: pair.access,
      refresh: pair.refresh,
      expiresAt: Date.now() + (pair.expires_in || 0) * 1000,
    };
    try {
      localStorage.setItem(STORAGE_KEY, JSON.stringify(state.tokens));
    } catch (e) {
      /* private mode: the tokens stay in memory only */
    }
  }

  function tokensStored() {
    try {
      var saved = JSON.parse(localStorage.getItem(STORAGE_KEY) || "null");
      return saved && saved.access && saved.refresh ? saved : null;
    } catch (e) {
      return null;
    }
  }

  function tokensLoad() {
    state.tokens = tokensStored();
  }

  function tokensClear() {
    state.tokens = null;
    try {
      localStorage.removeItem(STORAGE_KEY);
    } catch (e) {
      /* nothing stored */
    }
  }

  // Another tab signed in, refreshed the pair, or signed out.
  function onTokensChanged(event) {
    if (event.key !== STORAGE_KEY && event.key !== null) return;
    var stored = tokensStored();
    if (!stored) {
      if (state.tokens) signOutLocal("You signed out in another tab.");
      return;
    }
    var signedIn = !!state.tokens;
    state.tokens = stored;
    if (!signedIn) {
      enterApp().catch(function (err) {
        if (state.tokens) showError("signin-error", err.message);
      });
    }
  }

  function rawFetch(method, path, body, access) {
    var headers = { Accept: "application/json" };
    if (body !== undefined && body !== null) headers["Content-Type"] = "application/json";
    if (access) headers.Authorization = "Bearer " + access;
    return fetch(API + path, {
      method: method,
      headers: headers,
      body: body !== undefined && body !== null ? JSON.stringify(body) : undefined,
      credentials: "omit",
      cache: "no-store",
    }).then(
      function (response) {
        return response.text().then(function (text) {
          var data = null;
          if (text) {
            try {
              data = JSON.parse(text);
            } catch (e) {
              data = null;
            }
          }
          if (!response.ok) throw new ApiError(response.status, data);
          return data;
        });
      },
      function () {
        throw new ApiError(0, null);
      }
    );
  }

  var refreshing = null;

  // A refresh token is used once (a reuse ends the session), and tabs share it: one tab refreshes
  // at a time (Web Locks), and a tab that finds a pair newer than its own takes it instead.
  function tokensRefreshShared() {
    var used = state.tokens.refresh;
    function refreshOnce() {
      var stored = tokensStored();
      if (stored && stored.refresh !== used) {
        state.tokens = stored;
        return Promise.resolve();
      }
      return rawFetch("POST", "/auth/refresh", { refresh: used }, null).then(tokensSave);
    }
    if (navigator.locks && typeof navigator.locks.request === "function") {
      return navigator.locks.request(STORAGE_KEY + ".refresh", refreshOnce);
    }
    return refreshOnce();
  }

  function tokensRefresh() {
    if (!state.tokens) return Promise.reject(new ApiError(401, { detail: "Please sign in.", code: "unauthorized" }));
    if (!refreshing) {
      refreshing = tokensRefreshShared()
        .catch(function (err) {
          if (err.status === 401 || err.status === 422) signOutLocal("Your session has ended: please sign in again.");
          throw err;
        })
        .finally(function () {
          refreshing = null;
        });
    }
    return refreshing;
  }

  function api(method, path, body) {
    if (!state.tokens) return Promise.reject(new ApiError(401, { detail: "Please sign in.", code: "unauthorized" }));
    var ready = Date.now() > state.tokens.expiresAt - REFRESH_MARGIN_MS ? tokensRefresh() : Promise.resolve();
    return ready.then(function () {
      if (!state.tokens) throw new ApiError(401, { detail: "Please sign in.", code: "unauthorized" });
      return rawFetch(method, path, body, state.tokens.access).catch(function (err) {
        if (err.status !== 401 || !state.tokens) throw err;
        return tokensRefresh().then(function () {
          return rawFetch(method, path, body, state.tokens.access);
        });
      });
    });
  }

  // --- views ------------------------------------------------------------------------------------

  function show(view) {
    $("boot").hidden = true;
    $("auth-view").hidden = view !== "auth";
    $("chat-view").hidden = view !== "chat";
    $("account").hidden = view !== "chat";
    $("nav-toggle").hidden = view !== "chat";
  }

  function sidebarOpen(open) {
    $("sidebar").classList.toggle("open", open);
    $("nav-toggle").setAttribute("aria-expanded", open ? "true" : "false");
  }

  function authTab(which) {
    var signin = which === "signin";
    $("tab-signin").setAttribute("aria-selected", signin ? "true" : "false");
    $("tab-register").setAttribute("aria-selected", signin ? "false" : "true");
    $("signin-form").hidden = !signin;
    $("register-form").hidden = signin;
    $(signin ? "signin-username" : "register-username").focus();
  }

  function renderAccount() {
    var me = state.me;
    $("account-name").textContent = me.display_name || me.username;
    $("optin-state").textContent = intimateAllowed() ? "on" : "off";
  }

  function infoShow(message, withSettings) {
    $("info-text").textContent = message;
    $("info-settings").hidden = withSettings === false;
    $("info").hidden = !message;
  }

  function storageGet(key) {
    try {
      return localStorage.getItem(key);
    } catch (e) {
      return null;
    }
  }

  function storageSet(key, value) {
    try {
      localStorage.setItem(key, value);
    } catch (e) {
      /* private mode: offered again next time, while the profile still says UTC */
    }
  }

  function intimateAllowed() {
    return !!(state.me && state.me.adult_confirmed && state.me.intimate_opt_in);
  }

  function formatWhen(value) {
    if (!value) return "";
    var date = new Date(value);
    if (isNaN(date.getTime())) return "";
    return date.toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
  }

  // --- signing in -------------------------------------------------------------------------------

  function formValue(id) {
    return $(id).value.trim();
  }

  function signIn(username, password) {
    return rawFetch("POST", "/auth/token", { username: username, password: password }, null).then(function (pair) {
      tokensSave(pair);
      return enterApp();
    });
  }

  function onSignIn(event) {
    event.preventDefault();
    var username = formValue("signin-username");
    var password = $("signin-password").value;
    if (!username || !password) {
      showError("signin-error", "Enter your username and password.");
      return;
    }
    showError("signin-error", "");
    busy(event.target, true);
    signIn(username, password)
      .catch(function (err) {
        showError("signin-error", err.message);
      })
      .finally(function () {
        busy(event.target, false);
      });
  }

  function onRegister(event) {
    event.preventDefault();
    var username = formValue("register-username");
    var password = $("register-password").value;
    var displayName = formValue("register-display-name");
    if (!username || !password) {
      showError("register-error", "Choose a username and a password.");
      return;
    }
    showError("register-error", "");
    busy(event.target, true);
    var body = { username: username, password: password };
    if (displayName) body.display_name = displayName;
    rawFetch("POST", "/auth/register", body, null)
      .then(function () {
        return signIn(username, password);
      })
      .catch(function (err) {
        showError("register-error", err.message);
      })
      .finally(function () {
        busy(event.target, false);
      });
  }

  function busy(form, on) {
    Array.prototype.forEach.call(form.querySelectorAll("button[type=submit]"), function (button) {
      button.disabled = on;
    });
  }

  function signOutLocal(message) {
    socketClose();
    tokensClear();
    state.me = null;
    state.current = null;
    state.conversations = [];
    state.pending.clear();
    state.reminders = [];
    state.tasks = [];
    state.secretarySeq += 1;
    infoShow("");
    if (location.hash) history.replaceState(null, "", location.pathname);
    show("auth");
    authTab("signin");
    if (message) showError("signin-error", message);
  }

  function onSignOut() {
    var refresh = state.tokens && state.tokens.refresh;
    if (refresh) rawFetch("POST", "/auth/logout", { refresh: refresh }, null).catch(function () {});
    signOutLocal("");
  }

  function enterApp() {
    return api("GET", "/me").then(function (me) {
      state.me = me;
      renderAccount();
      show("chat");
      timezoneAdopt().then(secretaryLoad);
      modelsLoad();
      return Promise.all([avatarsLoad(), conversationsLoad()])
        .then(route)
        .catch(function (err) {
          // Signed in, but the lists did not load: say so on the page rather than leave it empty.
          if (state.tokens) showBanner(err.message + " Reload the page to try again.");
        });
    });
  }

  // --- the model picker ----------------------------------------------------------------------------

  // The models a message may name (GET /api/models). With one model there is nothing to pick:
  // the picker stays hidden and messages name none. "Default model" leaves the choice to the
  // server (the avatar's own model, else the list's default).
  function modelsLoad() {
    return api("GET", "/models")
      .then(function (models) {
        var picker = $("model-picker");
        while (picker.options.length > 1) picker.remove(1);
        if (!Array.isArray(models) || models.length < 2) {
          picker.hidden = true;
          return;
        }
        models.forEach(function (model) {
          var option = document.createElement("option");
          option.value = model.id;
          option.textContent = model.label + (model.default ? " (default)" : "");
          picker.append(option);
        });
        picker.hidden = false;
      })
      .catch(function () {
        $("model-picker").hidden = true; // the server's default still answers
      });
  }

  function modelChosen() {
    var picker = $("model-picker");
    return picker.hidden ? "" : picker.value;
  }

  // --- avatars and conversations ----------------------------------------------------------------

  function avatarsLoad() {
    return api("GET", "/avatars").then(function (avatars) {
      state.avatars = avatars;
      var list = $("avatar-list");
      list.textContent = "";
      avatars.forEach(function (avatar) {
        var item = document.createElement("li");
        var card = document.createElement("article");
        card.className = "card avatar-card";
        var name = document.createElement("h3");
        name.textContent = avatar.name + (avatar.is_own ? " (yours)" : "");
        var about = document.createElement("p");
        about.textContent = avatar.tagline || truncate(avatar.description || avatar.personality || "", 140);
        var start = document.createElement("button");
        start.type = "button";
        start.className = "primary";
        start.textContent = "Chat with " + avatar.name;
        start.dataset.avatarId = String(avatar.id);
        start.addEventListener("click", function () {
          conversationStart(avatar.id, start);
        });
        card.append(name, about, start);
        if (avatar.portrait && avatar.portrait.status === "ready") card.prepend(portraitElement(avatar));
        item.append(card);
        list.append(item);
      });
    });
  }

  function truncate(text, max) {
    return text.length > max ? text.slice(0, max - 1).trimEnd() + "\u2026" : text;
  }

  function conversationsLoad() {
    var query = $("conversation-search").value.trim();
    var path = "/conversations?limit=100" + (query ? "&q=" + encodeURIComponent(query) : "");
    return api("GET", path).then(function (conversations) {
      if (query !== $("conversation-search").value.trim()) return; // a newer search is on its way
      state.conversations = conversations;
      conversationsRender();
    });
  }

  function conversationRename(conversation) {
    var title = window.prompt("Rename this conversation", conversation.title || conversation.avatar.name);
    if (title === null || !title.trim()) return;
    api("PATCH", "/conversations/" + conversation.id, { title: title })
      .then(function (updated) {
        if (state.current && state.current.id === updated.id) {
          state.current = updated;
          $("conversation-title").textContent = updated.title;
        }
        return conversationsLoad();
      })
      .catch(function (err) {
        showBanner(err.message);
      });
  }

  function conversationDelete(conversation) {
    if (!window.confirm("Delete \u201c" + (conversation.title || conversation.avatar.name) + "\u201d and all its messages?")) return;
    api("DELETE", "/conversations/" + conversation.id)
      .then(function () {
        if (state.current && state.current.id === conversation.id) {
          socketClose();
          state.current = null;
          history.replaceState(null, "", location.pathname);
          pickerShow();
        }
        return conversationsLoad();
      })
      .catch(function (err) {
        showBanner(err.message);
      });
  }

  function conversationsRender() {
    var list = $("conversation-list");
    list.textContent = "";
    $("conversations-empty").hidden = state.conversations.length > 0;
    state.conversations.forEach(function (conversation) {
      var item = document.createElement("li");
      var button = document.createElement("button");
      button.type = "button";
      button.className = "open";
      button.dataset.conversationId = String(conversation.id);
      if (state.current && state.current.id === conversation.id) button.setAttribute("aria-current", "true");
      var name = document.createElement("span");
      name.className = "name";
      name.textContent = conversation.title || conversation.avatar.name;
      var when = document.createElement("span");
      when.className = "when";
      when.textContent =
        (MODE_LABELS[conversation.mode] || conversation.mode) +
        " \u00b7 " +
        formatWhen(conversation.last_message_at || conversation.created_at);
      button.append(name, when);
      if (conversation.unread > 0 && !(state.current && state.current.id === conversation.id)) {
        var badge = document.createElement("span");
        badge.className = "unread";
        badge.textContent = String(conversation.unread);
        badge.setAttribute("aria-label", conversation.unread + " unread");
        button.append(badge);
      }
      button.addEventListener("click", function () {
        location.hash = "#/c/" + conversation.id;
        sidebarOpen(false);
      });
      var rename = document.createElement("button");
      rename.type = "button";
      rename.className = "conv-action rename";
      rename.textContent = "\u270e";
      rename.title = "Rename";
      rename.setAttribute("aria-label", "Rename " + (conversation.title || conversation.avatar.name));
      rename.addEventListener("click", function () {
        conversationRename(conversation);
      });
      var remove = document.createElement("button");
      remove.type = "button";
      remove.className = "conv-action delete";
      remove.textContent = "\u00d7";
      remove.title = "Delete";
      remove.setAttribute("aria-label", "Delete " + (conversation.title || conversation.avatar.name));
      remove.addEventListener("click", function () {
        conversationDelete(conversation);
      });
      item.append(button, rename, remove);
      list.append(item);
    });
  }

  var conversationsReloadTimer = null;

  function conversationsReloadSoon() {
    clearTimeout(conversationsReloadTimer);
    conversationsReloadTimer = setTimeout(function () {
      conversationsLoad().catch(function () {});
    }, 400);
  }

  function conversationStart(avatarId, button) {
    if (button) button.disabled = true;
    return api("POST", "/conversations", { avatar_id: avatarId })
      .then(function (conversation) {
        state.conversations.unshift(conversation);
        location.hash = "#/c/" + conversation.id;
      })
      .catch(function (err) {
        showBanner(err.message);
      })
      .finally(function () {
        if (button) button.disabled = false;
      });
  }

  function onAvatarCreate(event) {
    event.preventDefault();
    var name = formValue("avatar-name");
    if (!name) {
      showError("avatar-error", "Give your avatar a name.");
      return;
    }
    showError("avatar-error", "");
    busy(event.target, true);
    api("POST", "/avatars", {
      name: name,
      tagline: formValue("avatar-tagline"),
      personality: $("avatar-personality").value.trim(),
    })
      .then(function (avatar) {
        event.target.reset();
        avatarsLoad().catch(function () {});
        return conversationStart(avatar.id, null);
      })
      .catch(function (err) {
        showError("avatar-error", err.message);
      })
      .finally(function () {
        busy(event.target, false);
      });
  }

  function pickerShow() {
    state.openSeq += 1; // a conversation still loading must not replace the picker
    socketClose();
    state.current = null;
    conversationsRender();
    $("conversation").hidden = true;
    $("picker").hidden = false;
  }

  function route() {
    var match = /^#\/c\/(\d+)$/.exec(location.hash);
    if (match) return conversationOpen(Number(match[1]));
    pickerShow();
    return null;
  }

  // --- the open conversation ------------------------------------------------------------------

  function conversationOpen(id) {
    var seq = ++state.openSeq;
    socketClose();
    return api("GET", "/conversations/" + id)
      .then(function (conversation) {
        if (seq !== state.openSeq) return null;
        return api("GET", "/conversations/" + id + "/messages?limit=" + PAGE_SIZE).then(function (page) {
          if (seq !== state.openSeq) return;
          conversationShow(conversation, page);
        });
      })
      .catch(function (err) {
        if (seq !== state.openSeq) return;
        if (err.status === 404) {
          history.replaceState(null, "", location.pathname);
          pickerShow();
          showBanner("That conversation does not exist any more.");
          return;
        }
        showBanner(err.message);
      });
  }

  function conversationShow(conversation, page) {
    state.current = conversation;
    state.elements.clear();
    state.streams.clear();
    state.pending.clear();
    state.lastSeenId = 0;
    state.nextBefore = page.next;
    var messages = $("messages");
    Array.prototype.slice.call(messages.querySelectorAll(".msg")).forEach(function (el) {
      el.remove();
    });
    $("load-older").hidden = !page.next;
    $("picker").hidden = true;
    $("conversation").hidden = false;
    $("conversation-title").textContent = conversation.title || conversation.avatar.name;
    var avatar = state.avatars.find(function (a) {
      return a.id === conversation.avatar.id;
    });
    $("conversation-tagline").textContent = avatar ? avatar.tagline : "";
    showError("composer-error", "");
    blockedShow(null);
    page.items.forEach(function (message) {
      messageUpsert(message);
    });
    var lastUser = page.items
      .slice()
      .reverse()
      .find(function (m) {
        return m.role === "user";
      });
    var route = lastUser && lastUser.route;
    modeShow(conversation.mode, conversation.mode_locked, route ? reasonFromRoute(route) : null, false);
    if (route && route.blocked && !intimateAllowed()) blockedShow(route.blocked_reason, route);
    $("composer-input").placeholder = "Message " + (conversation.avatar.name || "your avatar");
    conversationsRender();
    stopButtonUpdate();
    scrollToBottom();
    requestAnimationFrame(scrollToBottom); // again once the page has its final layout
    socketOpen();
    readMark();
    $("composer-input").focus();
  }

  // The open conversation is read: its unread count (reminders, check-ins) goes back to 0.
  function readMark() {
    var conversation = state.current;
    if (!conversation || document.visibilityState !== "visible") return;
    api("POST", "/conversations/" + conversation.id + "/read", {})
      .then(function () {
        conversation.unread = 0;
        var listed = state.conversations.find(function (c) {
          return c.id === conversation.id;
        });
        if (listed) listed.unread = 0;
        conversationsRender();
      })
      .catch(function () {});
  }

  function olderLoad() {
    if (!state.current || !state.nextBefore) return;
    var id = state.current.id;
    var button = $("load-older");
    button.disabled = true;
    api("GET", "/conversations/" + id + "/messages?limit=" + PAGE_SIZE + "&before=" + state.nextBefore)
      .then(function (page) {
        if (!state.current || state.current.id !== id) return;
        var messages = $("messages");
        var fromBottom = messages.scrollHeight - messages.scrollTop;
        page.items.forEach(function (message) {
          messageUpsert(message);
        });
        state.nextBefore = page.next;
        button.hidden = !page.next;
        messages.scrollTop = messages.scrollHeight - fromBottom;
      })
      .catch(function (err) {
        showError("composer-error", err.message);
      })
      .finally(function () {
        button.disabled = false;
      });
  }

  // --- messages -------------------------------------------------------------------------------

  function messageElement(role) {
    var el = document.createElement("div");
    el.className = "msg " + (role === "user" ? "user" : "assistant");
    var bubble = document.createElement("div");
    bubble.className = "bubble";
    var meta = document.createElement("div");
    meta.className = "meta";
    el.append(bubble, meta);
    return el;
  }

  function messageInsert(el, id) {
    var messages = $("messages");
    if (id) {
      var after = null;
      state.elements.forEach(function (other, otherId) {
        if (otherId > id && (!after || otherId < Number(after.dataset.id))) after = other;
      });
      if (after) {
        messages.insertBefore(el, after);
        return;
      }
    }
    messages.append(el);
  }

  function metaRender(el) {
    var meta = el.querySelector(".meta");
    meta.textContent = "";
    var status = el.dataset.status;
    var parts = [];
    if (el.classList.contains("assistant") && el.dataset.mode) parts.push(MODE_LABELS[el.dataset.mode] || el.dataset.mode);
    if (ORIGIN_LABELS[el.dataset.origin]) {
      var origin = document.createElement("span");
      origin.className = "origin-label";
      origin.textContent = ORIGIN_LABELS[el.dataset.origin];
      if (el.dataset.origin === "reminder") origin.prepend(icon("clock"), " ");
      meta.append(origin);
      if (parts.length) meta.append(document.createTextNode(" \u00b7 "));
    }
    if (parts.length) meta.append(document.createTextNode(parts.join(" \u00b7 ")));
    if (status && status !== "complete" && STATUS_LABELS[status]) {
      if (parts.length) meta.append(document.createTextNode(" \u00b7 "));
      var label = document.createElement("span");
      label.className = "status-label";
      label.textContent = STATUS_LABELS[status];
      meta.append(label);
    }
    if (el.dataset.note) meta.append(document.createTextNode(" \u2014 " + el.dataset.note));
  }

  // Shows a message as the API or an event describes it; the same id is one element.
  function messageUpsert(message) {
    var el = state.elements.get(message.id);
    if (!el && message.client_id && state.pending.has(message.client_id)) {
      el = state.pending.get(message.client_id).el;
      state.pending.delete(message.client_id);
      el.classList.remove("pending");
      el.remove();
    }
    var fresh = !el;
    if (!el) el = messageElement(message.role);
    el.dataset.id = String(message.id);
    el.dataset.role = message.role;
    el.dataset.mode = message.mode || "";
    el.dataset.replyTo = message.reply_to ? String(message.reply_to) : "";
    if (message.alternatives) el.dataset.alternatives = message.alternatives.join(",");
    if (message.origin) el.dataset.origin = message.origin;
    var stream = state.streams.get(message.id);
    if (message.status === "streaming") {
      el.dataset.status = "streaming";
      el.setAttribute("aria-busy", "true");
      if (!stream) el.querySelector(".bubble").textContent = message.content || "";
    } else {
      if (stream) state.streams.delete(message.id);
      el.dataset.status = message.status || "complete";
      el.removeAttribute("aria-busy");
      el.querySelector(".bubble").textContent = message.content || "";
      if (message.id > state.lastSeenId) state.lastSeenId = message.id;
    }
    if (message.error_code && (message.status === "failed" || message.status === "fallback")) {
      el.dataset.errorCode = message.error_code;
      el.dataset.note = errorText(message.error_code, "");
    }
    if (message.image) pictureRender(el, message.image);
    if (message.actions && message.actions.length && !el.querySelector(".actions")) {
      message.actions.forEach(function (action) {
        actionLineAdd(el, action);
      });
    }
    metaRender(el);
    if (fresh || !el.isConnected) {
      state.elements.set(message.id, el);
      messageInsert(el, message.id);
    }
    stopButtonUpdate();
    toolsRefresh();
    return el;
  }

  function messageRemove(id) {
    var el = state.elements.get(id);
    if (el) el.remove();
    state.elements.delete(id);
    state.streams.delete(id);
  }

  // --- a message's tools: alternatives, regenerate, edit, fork --------------------------------

  function toolButton(className, text, label, onClick) {
    var button = document.createElement("button");
    button.type = "button";
    button.className = className;
    button.textContent = text;
    button.setAttribute("aria-label", label);
    button.title = label;
    button.addEventListener("click", onClick);
    return button;
  }

  // The last user message can be edited; the last reply regenerated; a reply with
  // alternatives shows arrows between them; any finished message can start a fork.
  function toolsRefresh() {
    var lastUser = 0;
    var lastReply = 0;
    state.elements.forEach(function (el, id) {
      if (el.dataset.role === "user" && id > lastUser) lastUser = id;
      if (el.dataset.role === "assistant" && el.dataset.replyTo && id > lastReply) lastReply = id;
    });
    var streaming = state.streams.size > 0;
    state.elements.forEach(function (el, id) {
      var tools = el.querySelector(".tools");
      if (!tools) {
        tools = document.createElement("div");
        tools.className = "tools";
        el.append(tools);
      }
      tools.textContent = "";
      if (el.dataset.status === "streaming" || el.classList.contains("pending")) return;
      var alternatives = (el.dataset.alternatives || "").split(",").filter(Boolean).map(Number);
      if (el.dataset.role === "assistant" && alternatives.length > 1) {
        var at = alternatives.indexOf(id);
        var previous = toolButton("alt-prev", "\u2039", "Previous reply", function () {
          alternativeSelect(alternatives[at - 1]);
        });
        previous.disabled = at <= 0 || streaming;
        var count = document.createElement("span");
        count.className = "alt-count";
        count.textContent = at + 1 + "/" + alternatives.length;
        var next = toolButton("alt-next", "\u203a", "Next reply", function () {
          alternativeSelect(alternatives[at + 1]);
        });
        next.disabled = at >= alternatives.length - 1 || streaming;
        tools.append(previous, count, next);
      }
      if (id === lastReply && !streaming) {
        tools.append(
          toolButton("regenerate", "\u21bb Regenerate", "Write another reply", function () {
            frameSend({ type: "regenerate", message_id: Number(el.dataset.replyTo) });
          })
        );
      }
      if (id === lastUser && !streaming) {
        tools.append(
          toolButton("edit", "Edit", "Edit your last message", function () {
            messageEdit(id, el);
          })
        );
      }
      tools.append(
        toolButton("fork", "Fork", "Start a new conversation from here", function () {
          conversationFork(id);
        })
      );
    });
  }

  function alternativeSelect(messageId) {
    if (messageId) frameSend({ type: "select", message_id: messageId });
  }

  function messageEdit(id, el) {
    var current = el.querySelector(".bubble").textContent;
    var content = window.prompt("Edit your message", current);
    if (content === null || !content.trim() || content.trim() === current) return;
    frameSend({ type: "edit", message_id: id, content: content });
  }

  function conversationFork(messageId) {
    if (!state.current) return;
    api("POST", "/conversations/" + state.current.id + "/fork", { message_id: messageId })
      .then(function (fork) {
        location.hash = "#/c/" + fork.id;
        conversationsReloadSoon();
      })
      .catch(function (err) {
        showBanner(err.message);
      });
  }

  // Swipe left or right on a reply with alternatives: the next or previous one.
  function swipeBind() {
    var startX = null;
    var target = null;
    $("messages").addEventListener(
      "touchstart",
      function (event) {
        target = event.target.closest ? event.target.closest(".msg.assistant") : null;
        startX = event.touches.length === 1 ? event.touches[0].clientX : null;
      },
      { passive: true }
    );
    $("messages").addEventListener("touchend", function (event) {
      if (startX === null || !target || !event.changedTouches.length) return;
      var dx = event.changedTouches[0].clientX - startX;
      startX = null;
      if (Math.abs(dx) < 60) return;
      var button = target.querySelector(dx < 0 ? ".alt-next" : ".alt-prev");
      if (button && !button.disabled) button.click();
    });
  }

  function onMessageUpdated(frame) {
    // An edit: its earlier replies are gone; the new one streams next.
    var id = frame.message.id;
    state.elements.forEach(function (el, otherId) {
      if (el.dataset.replyTo === String(id)) messageRemove(otherId);
    });
    messageUpsert(frame.message);
  }

  function onAlternativeSelected(frame) {
    frame.alternatives.forEach(function (id) {
      if (id !== frame.message_id) messageRemove(id);
    });
    messageUpsert(frame.message);
  }

  function onMessageDeleted(frame) {
    frame.message_ids.forEach(messageRemove);
    toolsRefresh();
    conversationsReloadSoon();
  }

  function streamOf(messageId, mode) {
    var stream = state.streams.get(messageId);
    if (stream) return stream;
    var el = state.elements.get(messageId);
    if (!el) {
      el = messageElement("assistant");
      el.dataset.id = String(messageId);
      el.dataset.role = "assistant";
      state.elements.set(messageId, el);
      messageInsert(el, messageId);
    }
    // A reply's text is stored when it ends: until then it is exactly the tokens received.
    el.querySelector(".bubble").textContent = "";
    el.dataset.status = "streaming";
    if (mode) el.dataset.mode = mode;
    el.setAttribute("aria-busy", "true");
    metaRender(el);
    // `deltas[seq]` keeps each token once; `shown` counts the unbroken prefix on screen, so
    // the text is always a prefix of the reply, whatever order a resume delivers tokens in.
    stream = { deltas: [], shown: 0, el: el };
    state.streams.set(messageId, stream);
    stopButtonUpdate();
    return stream;
  }

  function onToken(frame) {
    var stream = streamOf(frame.message_id, null);
    if (stream.deltas[frame.seq] !== undefined) return; // already shown: a resume sends what we have again
    stream.deltas[frame.seq] = frame.delta;
    var bubble = stream.el.querySelector(".bubble");
    var follow = nearBottom();
    while (stream.deltas[stream.shown] !== undefined) {
      bubble.append(document.createTextNode(stream.deltas[stream.shown]));
      stream.shown += 1;
    }
    if (follow) scrollToBottom();
  }

  function onReplyStart(frame) {
    var follow = nearBottom();
    if (frame.reply_to) {
      // A regeneration: the reply it replaces steps aside (an arrow brings it back).
      (frame.alternatives || []).forEach(function (id) {
        if (id !== frame.message_id) messageRemove(id);
      });
    }
    var stream = streamOf(frame.message_id, frame.mode);
    if (frame.reply_to) {
      stream.el.dataset.replyTo = String(frame.reply_to);
      stream.el.dataset.alternatives = (frame.alternatives || []).join(",");
    }
    toolsRefresh();
    $("stream-status").textContent = (state.current ? state.current.avatar.name : "The avatar") + " is replying.";
    if (follow) scrollToBottom();
  }

  function onReplyEnd(frame) {
    if (frame.status === "streaming") return; // a repeated message's reply that is still being written
    var follow = nearBottom();
    var message = frame.message && frame.message.id ? frame.message : null;
    if (message) {
      messageUpsert(message);
    } else {
      messageUpsert({
        id: frame.message_id,
        role: "assistant",
        content: frame.content,
        status: frame.status,
        mode: (state.elements.get(frame.message_id) || { dataset: {} }).dataset.mode,
      });
    }
    var el = state.elements.get(frame.message_id);
    if (el && frame.error && frame.error.message) {
      el.dataset.note = frame.error.message;
      metaRender(el);
    }
    $("stream-status").textContent =
      frame.status === "cancelled" ? "Reply stopped." : frame.status === "complete" ? "Reply finished." : "Reply ended.";
    $("stop").disabled = false;
    $("stop").textContent = "Stop";
    stopButtonUpdate();
    conversationsReloadSoon();
    if (follow) scrollToBottom();
  }

  // A user message of a turn; or, outside any turn, an assistant message: a reminder falling
  // due or an avatar checking in. Either way one bubble, and the panel learns what was sent.
  function onMessageCreated(frame) {
    var follow = nearBottom();
    messageUpsert(frame.message);
    if (frame.message.role === "assistant") {
      if (frame.message.origin === "reminder") secretaryLoadSoon();
      if (frame.message.origin === "reminder" || frame.message.origin === "proactive") readMark();
      conversationsReloadSoon();
    }
    if (follow || frame.message.role === "user") scrollToBottom();
  }

  // What the secretary did during a reply: one line in that reply, and the panel read again.
  function onAction(frame) {
    var follow = nearBottom();
    var el = state.elements.get(frame.message_id) || streamOf(frame.message_id, null).el;
    actionLineAdd(el, frame);
    secretaryLoadSoon();
    if (follow) scrollToBottom();
  }

  // One line in a reply for one action: live from a frame, or from the stored reply's `actions`.
  function actionLineAdd(el, frame) {
    var list = el.querySelector(".actions");
    if (!list) {
      list = document.createElement("ul");
      list.className = "actions";
      list.setAttribute("aria-label", "What was done");
      el.insertBefore(list, el.querySelector(".bubble"));
    }
    var item = document.createElement("li");
    item.className = "action";
    item.dataset.name = frame.name;
    item.dataset.outcome = frame.error ? "error" : "ok";
    item.textContent = actionText(frame);
    // The mark carries the outcome: said in words for screen readers.
    item.setAttribute("aria-label", (frame.error ? "Failed: " : "Done: ") + item.textContent.slice(2));
    list.append(item);
  }

  function actionText(frame) {
    var result = frame.result || {};
    if (frame.error) {
      var what = ACTION_FAILURES[frame.name] || "Could not do that";
      return "\u2717 " + what + ": " + (frame.error.message || "it failed.");
    }
    if (result.confirmation) return "\u2713 " + result.confirmation;
    if (frame.name === "reminder_list") return "\u2713 Looked at your reminders (" + (result.count || 0) + " pending)";
    if (frame.name === "task_list") return "\u2713 Looked at your list (" + (result.count || 0) + " items)";
    return "\u2713 Done";
  }

  function stopButtonUpdate() {
    var streaming = state.streams.size > 0;
    $("stop").hidden = !streaming;
    $("send").hidden = streaming;
  }

  function nearBottom() {
    var messages = $("messages");
    return messages.scrollHeight - messages.scrollTop - messages.clientHeight < 80;
  }

  function scrollToBottom() {
    var messages = $("messages");
    messages.scrollTop = messages.scrollHeight;
  }

  // --- the mode badge ---------------------------------------------------------------------------

  function reasonFromRoute(route) {
    return {
      source: route.source,
      matched: route.matched,
      score: route.score,
      switched: !!route.switch,
      pointed: route.pointed,
      code: route.blocked ? route.blocked_reason : null,
      blocked: route.blocked || null,
    };
  }

  function scoreText(score) {
    return typeof score === "number" ? String(Math.round(score * 10) / 10) : "\u2013";
  }

  function modeExplain(mode, locked, reason) {
    var label = MODE_LABELS[mode] || mode;
    var lockNote = locked ? " It stays until you pick Auto." : "";
    if (!reason || !reason.source) {
      return label + " mode" + (locked ? ", chosen by you." + lockNote : ": the avatar switches when your messages point elsewhere.");
    }
    var matched = reason.matched ? "\u201c" + reason.matched + "\u201d" : "no phrase";
    if (reason.blocked) {
      return (
        "Your message pointed to intimate mode (matched " + matched + ", score " + scoreText(reason.score) +
        "), but it was blocked: " + blockReasonText(reason.code) + ". Staying in " + label + "."
      );
    }
    switch (reason.source) {
      case "intent":
        if (reason.switched === false) {
          if (!reason.pointed) {
            return label + " mode: your last message pointed to no mode (best match " + matched +
              ", score " + scoreText(reason.score) + "), so the avatar stayed.";
          }
          return label + " mode: your last message matched " + matched + " (score " + scoreText(reason.score) + ").";
        }
        return "Switched to " + label + " by the router: your message matched " + matched +
          " (score " + scoreText(reason.score) + ").";
      case "command":
        return label + " mode, because you asked for it (" + matched + ")." + lockNote;
      case "user":
        return label + " mode, chosen by you." + lockNote;
      case "lock":
        return label + " mode is locked: the router did not switch." + lockNote;
      case "gate":
        return "Left intimate mode: it is no longer allowed (" + blockReasonText(reason.code) + ").";
      default:
        return label + " mode (" + reason.source + ").";
    }
  }

  function modeTitle(mode, locked, reason) {
    var lines = [modeExplain(mode, locked, reason)];
    if (reason && reason.source) {
      var facts = ["source: " + reason.source];
      facts.push("matched: " + (reason.matched ? "\u201c" + reason.matched + "\u201d" : "none"));
      facts.push("score: " + scoreText(reason.score));
      if (reason.blocked) facts.push("blocked: " + reason.blocked + " (" + reason.code + ")");
      lines.push(facts.join(" \u00b7 "));
    }
    if (locked) lines.push("locked");
    return lines.join("\n");
  }

  function modeShow(mode, locked, reason, changed) {
    var badge = $("mode-badge");
    badge.dataset.mode = mode;
    badge.dataset.locked = locked ? "true" : "false";
    $("mode-badge-text").textContent = MODE_LABELS[mode] || mode;
    if (locked) $("mode-badge-text").append(" ", icon("lock")); // the badge's aria-label says "locked"
    var title = modeTitle(mode, locked, reason);
    badge.title = title;
    badge.setAttribute("aria-label", "Mode: " + (MODE_LABELS[mode] || mode) + (locked ? ", locked" : "") + ". Why?");
    $("mode-why").textContent = modeExplain(mode, locked, reason);
    $("mode-select").value = locked ? mode : "auto";
    if (changed) {
      badge.classList.remove("changed");
      void badge.offsetWidth; // restart the animation
      badge.classList.add("changed");
    }
    if (state.current) {
      state.current.mode = mode;
      state.current.mode_locked = locked;
    }
  }

  function onMode(frame) {
    var reason = frame.reason || {};
    var detail = {
      source: reason.source,
      matched: reason.matched,
      score: reason.score,
      switched: frame.mode !== frame.previous,
      pointed: null,
      blocked: frame.blocked || null,
      code: reason.code || null,
    };
    if (frame.blocked) {
      blockedShow(reason.code || "opt_in_required", reason);
    } else {
      blockedShow(null);
    }
    state.modeRequest = null;
    modeShow(frame.mode, !!frame.locked, detail, frame.mode !== frame.previous);
  }

  function blockedShow(code, reason) {
    var box = $("blocked");
    if (!code) {
      box.hidden = true;
      return;
    }
    var matched = reason && reason.matched ? " (matched \u201c" + reason.matched + "\u201d)" : "";
    var why = blockReasonText(code);
    $("blocked-text").textContent =
      "Intimate mode was blocked" + matched + ": " + why.charAt(0).toLowerCase() + why.slice(1) + ".";
    // The opt-in is the way out only when the profile is what blocks (not the avatar, not a crisis).
    $("blocked-optin").hidden = code !== "adult_required" && code !== "opt_in_required";
    box.dataset.code = code;
    box.hidden = false;
  }

  function onModeSelect() {
    var select = $("mode-select");
    var wanted = select.value;
    var previous = state.current && state.current.mode_locked ? state.current.mode : "auto";
    if (wanted === "intimate" && !intimateAllowed()) {
      select.value = previous;
      optinOpen(function () {
        select.value = "intimate";
        modeRequest("intimate", previous);
      });
      return;
    }
    modeRequest(wanted, previous);
  }

  function modeRequest(mode, previous) {
    state.modeRequest = previous;
    frameSend({ type: "set_mode", mode: mode });
  }

  // --- intimate mode opt-in -------------------------------------------------------------------

  var optinAfter = null;

  function optinOpen(after) {
    optinAfter = after || null;
    var on = intimateAllowed();
    $("optin-adult").checked = false;
    $("optin-confirm").disabled = true;
    $("optin-confirm").hidden = on;
    $("optin-adult").parentElement.hidden = on;
    $("optin-off").hidden = !on;
    showError("optin-error", "");
    var dialog = $("optin-dialog");
    if (typeof dialog.showModal === "function") dialog.showModal();
    else dialog.setAttribute("open", "");
  }

  function optinClose() {
    var dialog = $("optin-dialog");
    if (typeof dialog.close === "function") dialog.close();
    else dialog.removeAttribute("open");
  }

  function optinSave(body, after) {
    api("PATCH", "/me", body)
      .then(function (me) {
        state.me = me;
        renderAccount();
        optinClose();
        if (intimateAllowed()) {
          blockedShow(null);
          showError("composer-error", "");
        }
        if (after) after();
      })
      .catch(function (err) {
        showError("optin-error", err.message);
      });
  }

  // --- reminders and tasks ----------------------------------------------------------------------

  function userZone() {
    return (state.me && state.me.timezone) || "UTC";
  }

  // "Tue, Dec 8, 09:00" in the profile's zone (the browser's own when the name is unknown to it).
  function formatInZone(value) {
    if (!value) return "";
    var date = new Date(value);
    if (isNaN(date.getTime())) return "";
    var options = { weekday: "short", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", hourCycle: "h23" };
    try {
      return date.toLocaleString([], Object.assign({ timeZone: userZone() }, options));
    } catch (e) {
      return date.toLocaleString([], options);
    }
  }

  function secretaryLoad() {
    if (!state.me) return Promise.resolve();
    var seq = ++state.secretarySeq;
    return Promise.all([api("GET", "/reminders?status=pending"), api("GET", "/tasks")])
      .then(function (answers) {
        if (seq !== state.secretarySeq) return;
        state.reminders = answers[0];
        state.tasks = answers[1];
        showError("secretary-error", "");
        secretaryRender();
      })
      .catch(function (err) {
        if (seq !== state.secretarySeq || !state.tokens) return;
        showError("secretary-error", "Your reminders and tasks could not be loaded: " + err.message);
      });
  }

  var secretaryReloadTimer = null;

  function secretaryLoadSoon() {
    clearTimeout(secretaryReloadTimer);
    secretaryReloadTimer = setTimeout(secretaryLoad, 250);
  }

  function secretaryRender() {
    $("reminders-zone").textContent = "Times in " + userZone() + ".";
    var reminders = $("reminder-list");
    reminders.textContent = "";
    $("reminders-empty").hidden = state.reminders.length > 0;
    state.reminders.forEach(function (reminder) {
      reminders.append(reminderItem(reminder));
    });
    var tasks = $("task-list");
    tasks.textContent = "";
    $("tasks-empty").hidden = state.tasks.length > 0;
    state.tasks.forEach(function (task) {
      tasks.append(taskItem(task));
    });
  }

  function reminderItem(reminder) {
    var item = document.createElement("li");
    item.className = "item";
    item.dataset.reminderId = String(reminder.id);
    var body = document.createElement("div");
    body.className = "item-body";
    var text = document.createElement("span");
    text.className = "item-text";
    text.textContent = reminder.text;
    var when = document.createElement("span");
    when.className = "item-when";
    var time = document.createElement("time");
    time.dateTime = reminder.due_at;
    time.textContent = formatInZone(reminder.due_at);
    when.append(time);
    if (RECURRENCE_LABELS[reminder.recurrence]) when.append(" \u00b7 " + RECURRENCE_LABELS[reminder.recurrence]);
    body.append(text, when);
    var cancel = document.createElement("button");
    cancel.type = "button";
    cancel.className = "link-button";
    cancel.textContent = "Cancel";
    cancel.setAttribute("aria-label", "Cancel reminder: " + reminder.text);
    cancel.addEventListener("click", function () {
      cancel.disabled = true;
      api("PATCH", "/reminders/" + reminder.id, { status: "cancelled" })
        .then(function () {
          showError("secretary-error", "");
          state.reminders = state.reminders.filter(function (r) {
            return r.id !== reminder.id;
          });
          secretaryRender();
          $("stream-status").textContent = "Reminder cancelled: " + reminder.text;
        })
        .catch(function (err) {
          cancel.disabled = false;
          showError("secretary-error", "The reminder could not be cancelled: " + err.message);
          if (err.status === 404 || err.status === 409) secretaryLoadSoon(); // already sent or gone
        });
    });
    item.append(body, cancel);
    return item;
  }

  function taskItem(task) {
    var item = document.createElement("li");
    item.className = "item task";
    item.dataset.taskId = String(task.id);
    item.dataset.done = task.done ? "true" : "false";
    var body = document.createElement("div");
    body.className = "item-body";
    var label = document.createElement("label");
    label.className = "check task-check";
    var box = document.createElement("input");
    box.type = "checkbox";
    box.checked = !!task.done;
    var title = document.createElement("span");
    title.className = "item-text";
    title.textContent = task.title;
    label.append(box, title);
    body.append(label);
    if (task.due_at) {
      var when = document.createElement("span");
      when.className = "item-when";
      when.textContent = "Due " + formatInZone(task.due_at);
      body.append(when);
    }
    box.addEventListener("change", function () {
      var done = box.checked;
      box.disabled = true;
      api("PATCH", "/tasks/" + task.id, { done: done })
        .then(function (updated) {
          showError("secretary-error", "");
          task.done = updated.done;
          item.dataset.done = updated.done ? "true" : "false";
          $("stream-status").textContent = (updated.done ? "Ticked off: " : "Back on your list: ") + updated.title;
        })
        .catch(function (err) {
          box.checked = !done;
          showError("secretary-error", "The task could not be updated: " + err.message);
        })
        .finally(function () {
          box.disabled = false;
        });
    });
    var remove = document.createElement("button");
    remove.type = "button";
    remove.className = "link-button";
    remove.textContent = "Delete";
    remove.setAttribute("aria-label", "Delete task: " + task.title);
    remove.addEventListener("click", function () {
      remove.disabled = true;
      api("DELETE", "/tasks/" + task.id)
        .then(function () {
          showError("secretary-error", "");
          state.tasks = state.tasks.filter(function (t) {
            return t.id !== task.id;
          });
          secretaryRender();
        })
        .catch(function (err) {
          remove.disabled = false;
          showError("secretary-error", "The task could not be deleted: " + err.message);
        });
    });
    item.append(body, remove);
    return item;
  }

  function onTaskAdd(event) {
    event.preventDefault();
    var title = formValue("task-title");
    if (!title) {
      showError("secretary-error", "Write the task first.");
      $("task-title").focus();
      return;
    }
    busy(event.target, true);
    api("POST", "/tasks", { title: title })
      .then(function () {
        showError("secretary-error", "");
        $("task-title").value = "";
        return secretaryLoad();
      })
      .catch(function (err) {
        showError("secretary-error", "The task could not be added: " + err.message);
      })
      .finally(function () {
        busy(event.target, false);
      });
  }

  // --- settings: time zone, quiet hours, check-ins ----------------------------------------------

  function browserZone() {
    try {
      return Intl.DateTimeFormat().resolvedOptions().timeZone || "";
    } catch (e) {
      return "";
    }
  }

  // On the first visit of a profile still on the default UTC, this browser's zone is saved, once:
  // a user who later picks UTC by hand keeps it.
  function timezoneAdopt() {
    var me = state.me;
    var zone = browserZone();
    if (!me || me.timezone !== "UTC" || !zone || zone === "UTC" || zone === "Etc/UTC") return Promise.resolve();
    var key = TIMEZONE_OFFERED_KEY + me.id;
    if (storageGet(key)) return Promise.resolve();
    return api("PATCH", "/me", { timezone: zone })
      .then(function (updated) {
        storageSet(key, zone);
        state.me = updated;
        renderAccount();
        infoShow("Your time zone is now " + zone + ", this browser's: reminders use it.");
      })
      .catch(function (err) {
        if (err.status === 422) storageSet(key, zone); // a zone the server does not know: not again
      });
  }

  function timezoneOptionsFill() {
    var list = $("timezone-options");
    if (list.childElementCount || typeof Intl.supportedValuesOf !== "function") return;
    var zones = [];
    try {
      zones = Intl.supportedValuesOf("timeZone");
    } catch (e) {
      zones = [];
    }
    ["UTC"].concat(zones).forEach(function (zone) {
      var option = document.createElement("option");
      option.value = zone;
      list.append(option);
    });
  }

  function quietInputsUpdate() {
    var on = $("settings-quiet").checked;
    $("settings-quiet-start").disabled = !on;
    $("settings-quiet-end").disabled = !on;
  }

  function settingsOpen() {
    var me = state.me;
    if (!me) return;
    timezoneOptionsFill();
    $("settings-timezone").value = me.timezone || "UTC";
    var zone = browserZone();
    $("settings-browser-zone").textContent = zone ? "This browser: " + zone + "." : "";
    $("settings-quiet").checked = !!me.quiet_hours;
    if (me.quiet_hours) {
      $("settings-quiet-start").value = me.quiet_hours.start;
      $("settings-quiet-end").value = me.quiet_hours.end;
    }
    quietInputsUpdate();
    $("settings-proactive").checked = !!me.proactive_opt_in;
    showError("settings-error", "");
    var dialog = $("settings-dialog");
    if (typeof dialog.showModal === "function") dialog.showModal();
    else dialog.setAttribute("open", "");
  }

  function settingsClose() {
    var dialog = $("settings-dialog");
    if (typeof dialog.close === "function") dialog.close();
    else dialog.removeAttribute("open");
  }

  function onSettingsSave(event) {
    event.preventDefault();
    var zone = formValue("settings-timezone");
    if (!zone) {
      showError("settings-error", "Enter a time zone, such as Europe/Paris.");
      $("settings-timezone").focus();
      return;
    }
    var body = { timezone: zone, proactive_opt_in: $("settings-proactive").checked, quiet_hours: null };
    if ($("settings-quiet").checked) {
      var start = $("settings-quiet-start").value.slice(0, 5);
      var end = $("settings-quiet-end").value.slice(0, 5);
      if (!start || !end) {
        showError("settings-error", "Give quiet hours a start and an end, or turn them off.");
        return;
      }
      body.quiet_hours = { start: start, end: end };
    }
    busy(event.target, true);
    api("PATCH", "/me", body)
      .then(function (me) {
        state.me = me;
        renderAccount();
        settingsClose();
        infoShow("");
        $("stream-status").textContent = "Settings saved.";
        secretaryRender();
      })
      .catch(function (err) {
        showError("settings-error", err.message);
      })
      .finally(function () {
        busy(event.target, false);
      });
  }

  // --- the websocket ----------------------------------------------------------------------------

  var sock = { ws: null, conversationId: null, wanted: false, attempt: 0, timer: null };

  function connectionShow(stateName, text) {
    var el = $("connection");
    el.dataset.state = stateName;
    el.textContent =
      text ||
      {
        open: "Connected",
        connecting: "Connecting\u2026",
        reconnecting: "Reconnecting\u2026",
        closed: "Offline",
        idle: "Paused",
      }[stateName] ||
      "";
  }

  function socketOpen() {
    if (!state.current) return;
    var id = state.current.id;
    sock.wanted = true;
    sock.conversationId = id;
    clearTimeout(sock.timer);
    if (sock.ws && sock.ws.readyState <= 1) return;
    connectionShow(sock.attempt ? "reconnecting" : "connecting");
    api("POST", "/ws-ticket", { conversation_id: id })
      .then(function (answer) {
        if (!sock.wanted || sock.conversationId !== id || (sock.ws && sock.ws.readyState <= 1)) return;
        var scheme = location.protocol === "https:" ? "wss:" : "ws:";
        var url = scheme + "//" + location.host + WS_PATH + id + "/?ticket=" + encodeURIComponent(answer.ticket);
        var ws = new WebSocket(url);
        sock.ws = ws;
        ws.onopen = function () {
          if (sock.ws !== ws) return;
          sock.attempt = 0;
          connectionShow("open");
          // What was missed while away (and any reply in flight), then anything not yet stored.
          ws.send(JSON.stringify({ type: "resume", after: state.lastSeenId }));
          state.pending.forEach(function (entry) {
            ws.send(JSON.stringify(entry.frame));
          });
        };
        ws.onmessage = function (event) {
          if (sock.ws !== ws) return;
          var frame;
          try {
            frame = JSON.parse(event.data);
          } catch (e) {
            return;
          }
          frameHandle(frame);
        };
        ws.onclose = function (event) {
          if (sock.ws !== ws) return;
          sock.ws = null;
          if (!sock.wanted) {
            connectionShow("closed");
          } else if (event.code === CLOSE_IDLE) {
            connectionShow("idle", "Paused while idle");
          } else {
            socketRetry();
          }
        };
      })
      .catch(function (err) {
        if (sock.conversationId !== id || !sock.wanted) return;
        if (err.status === 404) {
          sock.wanted = false;
          connectionShow("closed");
          showError("composer-error", err.message);
          return;
        }
        if (err.status === 401) return; // signed out: the sign-in form says so
        socketRetry();
      });
  }

  function socketRetry() {
    var delay = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * Math.pow(2, sock.attempt));
    delay = Math.round(delay * (0.75 + Math.random() * 0.5));
    sock.attempt += 1;
    connectionShow("reconnecting", "Reconnecting in " + Math.max(1, Math.round(delay / 1000)) + " s\u2026");
    clearTimeout(sock.timer);
    sock.timer = setTimeout(socketOpen, delay);
  }

  function socketClose() {
    sock.wanted = false;
    sock.attempt = 0;
    clearTimeout(sock.timer);
    var ws = sock.ws;
    sock.ws = null;
    if (ws) ws.close(1000);
    connectionShow("closed");
  }

  function frameSend(frame) {
    if (sock.ws && sock.ws.readyState === 1) {
      sock.ws.send(JSON.stringify(frame));
      return true;
    }
    if (frame.type === "message") {
      socketOpen(); // pending messages are sent once the socket opens
      return true;
    }
    showError("composer-error", "Not connected yet: try again in a moment.");
    if (frame.type === "set_mode") modeRevert();
    socketOpen();
    return false;
  }

  function frameHandle(frame) {
    switch (frame.type) {
      case "message.created":
        onMessageCreated(frame);
        break;
      case "message.updated":
        onMessageUpdated(frame);
        break;
      case "alternative.selected":
        onAlternativeSelected(frame);
        break;
      case "message.deleted":
        onMessageDeleted(frame);
        break;
      case "mode":
        onMode(frame);
        break;
      case "safety":
        onSafety(frame);
        break;
      case "notice":
        onNotice(frame);
        break;
      case "reply.start":
        onReplyStart(frame);
        break;
      case "token":
        onToken(frame);
        break;
      case "reply.end":
        onReplyEnd(frame);
        break;
      case "action":
        onAction(frame);
        break;
      case "error":
        onErrorFrame(frame);
        break;
      case "image.ready":
        onImageReady(frame);
        break;
      default:
        break; // pong, and frames a newer server may add
    }
  }

  // A crisis turn: a calm card with the crisis lines of the user's locale, above the reply.
  function onSafety(frame) {
    var card = document.createElement("aside");
    card.className = "safety-card";
    card.setAttribute("role", "note");
    card.setAttribute("aria-label", "Support is available");
    var title = document.createElement("p");
    title.className = "safety-title";
    title.textContent = "You don\u2019t have to go through this alone. Someone is there to talk, right now:";
    card.append(title);
    var list = document.createElement("ul");
    (frame.resources || []).forEach(function (resource) {
      var item = document.createElement("li");
      var name = document.createElement("strong");
      name.textContent = resource.name;
      item.append(name);
      if (resource.phone) {
        item.append(" \u2014 call ");
        var phone = document.createElement("a");
        phone.href = "tel:" + resource.phone.replace(/\s+/g, "");
        phone.textContent = resource.phone;
        item.append(phone);
      }
      if (resource.text) item.append(" \u2014 " + resource.text);
      if (resource.url && /^https:\/\//.test(resource.url)) {
        item.append(" \u2014 ");
        var link = document.createElement("a");
        link.href = resource.url;
        link.target = "_blank";
        link.rel = "noopener noreferrer";
        link.textContent = resource.url.replace(/^https:\/\//, "");
        item.append(link);
      }
      list.append(item);
    });
    card.append(list);
    var emergency = document.createElement("p");
    emergency.className = "safety-emergency";
    emergency.textContent = "If you are in immediate danger, call your local emergency number.";
    card.append(emergency);
    $("messages").append(card);
    scrollToBottom();
  }

  // The AI notice: at a conversation's start and every few hours of use.
  function onNotice(frame) {
    var line = document.createElement("p");
    line.className = "ai-notice";
    line.setAttribute("role", "note");
    line.textContent = frame.text;
    $("messages").append(line);
    scrollToBottom();
  }

  function onErrorFrame(frame) {
    var message = errorText(frame.code, frame.message);
    if (frame.code === "intimate_blocked") {
      // A refused switch: the blocked notice says why, once, with its way out.
      modeRevert();
      blockedShow(frame.reason || "other", null);
      return;
    }
    if (frame.code && frame.code.indexOf("llm_") === 0) {
      showError("composer-error", message);
      return;
    }
    if (frame.code === "quota_exceeded") {
      // The message is stored (message.created came first); no reply comes until the reset.
      var hours = frame.retry_after ? Math.ceil(frame.retry_after / 3600) : null;
      showError("composer-error", message + (hours ? " (in about " + hours + " h)" : ""));
      return;
    }
    // A refused message (invalid, busy, throttled...): nothing was stored, give the text back.
    var last = null;
    state.pending.forEach(function (entry, clientId) {
      last = { entry: entry, clientId: clientId };
    });
    if (last && frame.code !== "unknown_type" && frame.code !== "invalid_frame") {
      state.pending.delete(last.clientId);
      last.entry.el.remove();
      var input = $("composer-input");
      if (!input.value) input.value = last.entry.frame.content;
    }
    if (frame.field === "mode") modeRevert();
    showError("composer-error", message + (frame.retryable ? " You can try again." : ""));
  }

  function modeRevert() {
    if (state.modeRequest !== null && state.modeRequest !== undefined) {
      $("mode-select").value = state.modeRequest;
      state.modeRequest = null;
    }
  }

  // --- writing --------------------------------------------------------------------------------

  function clientId() {
    if (window.crypto && typeof window.crypto.randomUUID === "function") return window.crypto.randomUUID();
    return Date.now().toString(36) + "-" + Math.random().toString(36).slice(2, 12);
  }

  function onSend(event) {
    if (event) event.preventDefault();
    var input = $("composer-input");
    var text = input.value.trim();
    if (!state.current) return;
    if (!text) {
      showError("composer-error", "Write a message first.");
      input.focus();
      return;
    }
    if (composerOverLimit()) {
      composerLimitUpdate();
      input.focus();
      return;
    }
    if (state.streams.size > 0) {
      showError("composer-error", "Wait for the reply to finish, or stop it.");
      return;
    }
    showError("composer-error", "");
    var id = clientId();
    var frame = { type: "message", content: text, client_id: id };
    var model = modelChosen();
    if (model) frame.model = model;
    var el = messageElement("user");
    el.classList.add("pending");
    el.dataset.clientId = id;
    el.dataset.status = "pending";
    el.querySelector(".bubble").textContent = text;
    metaRender(el);
    $("messages").append(el);
    state.pending.set(id, { frame: frame, el: el });
    input.value = "";
    inputResize();
    composerLimitUpdate();
    scrollToBottom();
    frameSend(frame);
  }

  // --- the message length limit: a counter near it, and a refusal past it (never a cut) ---------

  var limitErrorShown = false;

  function charCount(text) {
    return Array.from(text).length; // code points, as the server counts
  }

  function composerOverLimit() {
    return MESSAGE_MAX_CHARS > 0 && charCount($("composer-input").value.trim()) > MESSAGE_MAX_CHARS;
  }

  function composerLimitUpdate() {
    var input = $("composer-input");
    var counter = $("composer-count");
    if (!MESSAGE_MAX_CHARS) return;
    var count = charCount(input.value.trim());
    var over = count > MESSAGE_MAX_CHARS;
    counter.hidden = count < MESSAGE_MAX_CHARS * COUNTER_FROM;
    counter.textContent = count.toLocaleString("en") + " / " + MESSAGE_MAX_CHARS.toLocaleString("en") + " characters";
    counter.classList.toggle("over", over);
    input.setAttribute("aria-invalid", over ? "true" : "false");
    $("send").disabled = over;
    if (over) {
      showError(
        "composer-error",
        "This message is " + (count - MESSAGE_MAX_CHARS).toLocaleString("en") + " characters over the limit of " +
          MESSAGE_MAX_CHARS.toLocaleString("en") + ". Shorten it to send it."
      );
      limitErrorShown = true;
    } else if (limitErrorShown) {
      showError("composer-error", "");
      limitErrorShown = false;
    }
  }

  // --- pictures: served with the bearer token, so fetched and shown from a blob ------------------

  var pictureUrls = new Map(); // the served url -> a blob: URL of this page

  function pictureBlobUrl(url) {
    if (pictureUrls.has(url)) return Promise.resolve(pictureUrls.get(url));
    var ready = state.tokens && Date.now() > state.tokens.expiresAt - REFRESH_MARGIN_MS ? tokensRefresh() : Promise.resolve();
    return ready
      .then(function () {
        if (!state.tokens) throw new ApiError(401, null);
        return fetch(url, { headers: { Authorization: "Bearer " + state.tokens.access }, credentials: "omit" });
      })
      .then(function (response) {
        if (!response.ok) throw new ApiError(response.status, null);
        return response.blob();
      })
      .then(function (blob) {
        var objectUrl = URL.createObjectURL(blob);
        pictureUrls.set(url, objectUrl);
        return objectUrl;
      });
  }

  function portraitElement(avatar) {
    var img = document.createElement("img");
    img.className = "portrait";
    img.alt = "Portrait of " + avatar.name;
    img.width = 96;
    img.height = 96;
    pictureBlobUrl(avatar.portrait.url)
      .then(function (src) {
        img.src = src;
      })
      .catch(function () {
        img.remove();
      });
    return img;
  }

  // A message's picture: being made, shown, or why there is none (a refusal is explained).
  function pictureRender(el, image) {
    var box = el.querySelector(".picture");
    if (!box) {
      box = document.createElement("figure");
      box.className = "picture";
      el.querySelector(".bubble").after(box);
    }
    if (box.dataset.status === image.status && box.dataset.imageId === String(image.id)) return;
    box.dataset.status = image.status;
    box.dataset.imageId = String(image.id);
    box.textContent = "";
    box.removeAttribute("aria-busy");
    if (image.status === "ready" && image.url) {
      var img = document.createElement("img");
      img.alt = "A picture from " + ((state.current && state.current.avatar && state.current.avatar.name) || "your avatar");
      box.append(img);
      var follow = nearBottom();
      img.addEventListener("load", function () {
        if (follow) scrollToBottom(); // the picture grew the message: keep the newest in view
      });
      pictureBlobUrl(image.url)
        .then(function (src) {
          img.src = src;
        })
        .catch(function () {
          box.textContent = "The picture could not be loaded.";
        });
      return;
    }
    var caption = document.createElement("figcaption");
    if (image.status === "pending") {
      box.setAttribute("aria-busy", "true");
      caption.textContent = "Making the picture\u2026";
    } else {
      var why = (image.error && image.error.message) || "The picture could not be made.";
      var said = el.querySelector(".bubble").textContent;
      caption.textContent = said === why ? "No picture was made." : "No picture: " + why;
    }
    box.append(caption);
  }

  function onImageReady(frame) {
    var el = frame.message_id ? state.elements.get(frame.message_id) : null;
    if (el) pictureRender(el, frame.image);
    if (frame.kind === "portrait") avatarsLoad().catch(function () {});
  }

  // "Picture": asks for one; the composer's text, if any, says of what.
  function onPictureAsk() {
    if (!state.current) return;
    var input = $("composer-input");
    var text = input.value.trim();
    if (text.length > PICTURE_PROMPT_MAX_CHARS) {
      showError("composer-error", "Say what the picture shows in at most 400 characters.");
      return;
    }
    showError("composer-error", "");
    if (frameSend({ type: "image", prompt: text, client_id: clientId() })) {
      input.value = "";
      inputResize();
    }
  }

  function onStop() {
    var stop = $("stop");
    stop.disabled = true;
    stop.textContent = "Stopping\u2026";
    var reset = function () {
      stop.disabled = false;
      stop.textContent = "Stop";
    };
    if (!frameSend({ type: "stop" })) reset();
    else setTimeout(reset, 8000); // the reply.end of the stop normally comes first
  }

  function onComposerKey(event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      onSend(null);
    }
  }

  function inputResize() {
    var input = $("composer-input");
    input.style.height = "auto";
    input.style.height = Math.min(input.scrollHeight + 2, 192) + "px";
  }

  // --- your data: what the avatar remembers, card import, export, erasure ---------------------------

  function dialogOpen(id) {
    var dialog = $(id);
    if (typeof dialog.showModal === "function") {
      if (!dialog.open) dialog.showModal();
    } else dialog.setAttribute("open", "");
  }

  function dialogClose(id) {
    var dialog = $(id);
    if (typeof dialog.close === "function") dialog.close();
    else dialog.removeAttribute("open");
  }

  function memoryOpen() {
    var conversation = state.current;
    if (!conversation) return;
    var avatar = conversation.avatar;
    var seq = (state.memorySeq += 1);
    $("memory-title").textContent = "What " + (avatar.name || "your avatar") + " remembers";
    $("memory-list").textContent = "";
    $("memory-empty").hidden = true;
    showError("memory-error", "");
    dialogOpen("memory-dialog");
    api("GET", "/avatars/" + avatar.id + "/memories")
      .then(function (memories) {
        if (seq !== state.memorySeq) return;
        memoryRender(avatar, memories);
      })
      .catch(function (err) {
        showError("memory-error", "What your avatar remembers could not be loaded: " + err.message);
      });
  }

  function memoryRender(avatar, memories) {
    var list = $("memory-list");
    list.textContent = "";
    memories.forEach(function (memory) {
      list.append(memoryItem(avatar, memory));
    });
    var empty = $("memory-empty");
    empty.textContent = (avatar.name || "Your avatar") + " remembers nothing about you yet.";
    empty.hidden = memories.length > 0;
  }

  function memoryItem(avatar, memory) {
    var item = document.createElement("li");
    item.className = "item memory";
    item.dataset.memoryId = String(memory.id);
    item.dataset.pinned = memory.pinned ? "true" : "false";
    var label = document.createElement("label");
    label.className = "visually-hidden";
    label.htmlFor = "memory-text-" + memory.id;
    label.textContent = "Remembered fact";
    var text = document.createElement("input");
    text.id = "memory-text-" + memory.id;
    text.className = "memory-text";
    text.maxLength = 500;
    text.value = memory.text;
    var save = document.createElement("button");
    save.type = "button";
    save.className = "link-button memory-save";
    save.textContent = "Save";
    save.hidden = true;
    text.addEventListener("input", function () {
      save.hidden = text.value.trim() === memory.text;
    });
    var pin = document.createElement("button");
    pin.type = "button";
    pin.className = "link-button memory-pin";
    var remove = document.createElement("button");
    remove.type = "button";
    remove.className = "link-button memory-delete";
    remove.textContent = "Forget";
    remove.setAttribute("aria-label", "Forget: " + memory.text);
    function pinShow() {
      pin.textContent = memory.pinned ? "Unpin" : "Pin";
      pin.setAttribute("aria-pressed", memory.pinned ? "true" : "false");
      item.dataset.pinned = memory.pinned ? "true" : "false";
    }
    function change(body, button) {
      button.disabled = true;
      return api("PATCH", "/memories/" + memory.id, body)
        .then(function (updated) {
          showError("memory-error", "");
          memory = updated;
          text.value = updated.text;
          remove.setAttribute("aria-label", "Forget: " + updated.text);
          save.hidden = true;
          pinShow();
        })
        .catch(function (err) {
          showError("memory-error", "The fact could not be changed: " + err.message);
        })
        .finally(function () {
          button.disabled = false;
        });
    }
    save.addEventListener("click", function () {
      var value = text.value.trim();
      if (!value) {
        showError("memory-error", "A fact cannot be empty; use Forget to remove it.");
        return;
      }
      change({ text: value }, save);
    });
    text.addEventListener("keydown", function (event) {
      if (event.key === "Enter") {
        event.preventDefault();
        if (!save.hidden) save.click();
      }
    });
    pin.addEventListener("click", function () {
      change({ pinned: !memory.pinned }, pin);
    });
    remove.addEventListener("click", function () {
      remove.disabled = true;
      api("DELETE", "/memories/" + memory.id)
        .then(function () {
          showError("memory-error", "");
          item.remove();
          var empty = $("memory-empty");
          empty.textContent = (avatar.name || "Your avatar") + " remembers nothing about you yet.";
          empty.hidden = $("memory-list").children.length > 0;
          $("stream-status").textContent = "Forgotten.";
        })
        .catch(function (err) {
          remove.disabled = false;
          showError("memory-error", "The fact could not be forgotten: " + err.message);
        });
    });
    pinShow();
    item.append(label, text, save, pin, remove);
    return item;
  }

  // A multipart upload: the API's JSON helper cannot carry a file.
  function upload(path, form) {
    function send() {
      return fetch(API + path, {
        method: "POST",
        headers: { Accept: "application/json", Authorization: "Bearer " + state.tokens.access },
        body: form,
        credentials: "omit",
        cache: "no-store",
      }).then(
        function (response) {
          return response.text().then(function (text) {
            var data = null;
            try {
              data = text ? JSON.parse(text) : null;
            } catch (e) {
              data = null;
            }
            if (!response.ok) throw new ApiError(response.status, data);
            return data;
          });
        },
        function () {
          throw new ApiError(0, null);
        }
      );
    }
    if (!state.tokens) return Promise.reject(new ApiError(401, { detail: "Please sign in.", code: "unauthorized" }));
    var ready = Date.now() > state.tokens.expiresAt - REFRESH_MARGIN_MS ? tokensRefresh() : Promise.resolve();
    return ready.then(send).catch(function (err) {
      if (err.status !== 401 || !state.tokens) throw err;
      return tokensRefresh().then(send);
    });
  }

  function onCardImport(event) {
    event.preventDefault();
    var file = $("card-file").files[0];
    if (!file) {
      showError("card-error", "Choose a character card first: a .json file or a .png with the card inside.");
      return;
    }
    showError("card-error", "");
    var form = new FormData();
    form.append("file", file, file.name);
    busy(event.target, true);
    upload("/avatars/import", form)
      .then(function (avatar) {
        event.target.reset();
        return avatarsLoad()
          .catch(function () {})
          .then(function () {
            return conversationStart(avatar.id, null);
          });
      })
      .catch(function (err) {
        showError("card-error", "The card could not be imported: " + err.message);
      })
      .finally(function () {
        busy(event.target, false);
      });
  }

  // The export needs the bearer token, so it cannot be a plain link: fetched, then saved from a blob.
  function onExport() {
    var button = $("export-download");
    button.disabled = true;
    $("export-status").textContent = "Preparing your data\u2026";
    var ready = Date.now() > state.tokens.expiresAt - REFRESH_MARGIN_MS ? tokensRefresh() : Promise.resolve();
    ready
      .then(function () {
        return fetch(API + "/me/export", {
          headers: { Authorization: "Bearer " + state.tokens.access },
          credentials: "omit",
          cache: "no-store",
        });
      })
      .then(function (response) {
        if (!response.ok) throw new ApiError(response.status, null);
        var disposition = response.headers.get("Content-Disposition") || "";
        var match = /filename="([^"]+)"/.exec(disposition);
        return response.blob().then(function (blob) {
          var link = document.createElement("a");
          link.href = URL.createObjectURL(blob);
          link.download = match ? match[1] : "companion-export.json";
          document.body.append(link);
          link.click();
          link.remove();
          setTimeout(function () {
            URL.revokeObjectURL(link.href);
          }, 10000);
          $("export-status").textContent = "Downloaded " + link.download + ".";
        });
      })
      .catch(function (err) {
        $("export-status").textContent = "";
        showError("settings-error", "Your data could not be downloaded: " + err.message);
      })
      .finally(function () {
        button.disabled = false;
      });
  }

  function eraseOpen() {
    settingsClose();
    $("erase-form").reset();
    $("erase-submit").disabled = true;
    showError("erase-error", "");
    dialogOpen("erase-dialog");
    $("erase-password").focus();
  }

  function onErase(event) {
    event.preventDefault();
    var password = $("erase-password").value;
    if (!password) {
      showError("erase-error", "Type your password to confirm.");
      return;
    }
    if (!$("erase-confirm").checked) {
      showError("erase-error", "Tick the box to confirm that this cannot be undone.");
      return;
    }
    $("erase-submit").disabled = true;
    api("DELETE", "/me", { password: password })
      .then(function () {
        dialogClose("erase-dialog");
        signOutLocal("");
        infoShow("Your account and everything in it were deleted.", false);
      })
      .catch(function (err) {
        $("erase-submit").disabled = false;
        var message = err.code === "wrong_password" ? "That is not your password." : err.message;
        showError("erase-error", message + " Nothing was deleted.");
      });
  }

  // --- start ------------------------------------------------------------------------------------

  function bind() {
    $("tab-signin").addEventListener("click", function () {
      authTab("signin");
    });
    $("tab-register").addEventListener("click", function () {
      authTab("register");
    });
    $("signin-form").addEventListener("submit", onSignIn);
    $("register-form").addEventListener("submit", onRegister);
    $("sign-out").addEventListener("click", onSignOut);
    $("nav-toggle").addEventListener("click", function () {
      sidebarOpen(!$("sidebar").classList.contains("open"));
    });
    $("new-conversation").addEventListener("click", function () {
      sidebarOpen(false);
      if (location.hash) location.hash = "";
      else pickerShow();
    });
    $("avatar-form").addEventListener("submit", onAvatarCreate);
    $("load-older").addEventListener("click", olderLoad);
    var searchTimer = null;
    $("conversation-search").addEventListener("input", function () {
      clearTimeout(searchTimer);
      searchTimer = setTimeout(function () {
        conversationsLoad().catch(function () {});
      }, 250);
    });
    swipeBind();
    $("composer").addEventListener("submit", onSend);
    $("composer-input").addEventListener("keydown", onComposerKey);
    $("composer-input").addEventListener("input", inputResize);
    $("composer-input").addEventListener("input", composerLimitUpdate);
    $("stop").addEventListener("click", onStop);
    $("picture").addEventListener("click", onPictureAsk);
    $("mode-select").addEventListener("change", onModeSelect);
    $("mode-badge").addEventListener("click", function () {
      var why = $("mode-why");
      var follow = nearBottom();
      why.hidden = !why.hidden;
      if (follow) scrollToBottom();
      $("mode-badge").setAttribute("aria-expanded", why.hidden ? "false" : "true");
    });
    $("optin-open").addEventListener("click", function () {
      optinOpen(null);
    });
    $("blocked-optin").addEventListener("click", function () {
      optinOpen(function () {
        showError("composer-error", "");
        $("stream-status").textContent = "Intimate mode is on.";
      });
    });
    $("optin-adult").addEventListener("change", function () {
      $("optin-confirm").disabled = !$("optin-adult").checked;
    });
    $("optin-confirm").addEventListener("click", function () {
      if (!$("optin-adult").checked) {
        showError("optin-error", "Confirm that you are 18 or older first.");
        return;
      }
      optinSave({ adult_confirmed: true, intimate_opt_in: true }, optinAfter);
    });
    $("optin-off").addEventListener("click", function () {
      optinSave({ intimate_opt_in: false }, null);
    });
    $("optin-cancel").addEventListener("click", optinClose);
    $("settings-open").addEventListener("click", settingsOpen);
    $("settings-cancel").addEventListener("click", settingsClose);
    $("settings-form").addEventListener("submit", onSettingsSave);
    $("settings-quiet").addEventListener("change", quietInputsUpdate);
    $("info-settings").addEventListener("click", settingsOpen);
    $("info-close").addEventListener("click", function () {
      infoShow("");
    });
    $("task-form").addEventListener("submit", onTaskAdd);
    $("memory-open").addEventListener("click", memoryOpen);
    $("memory-close").addEventListener("click", function () {
      dialogClose("memory-dialog");
    });
    $("card-form").addEventListener("submit", onCardImport);
    $("export-download").addEventListener("click", onExport);
    $("erase-open").addEventListener("click", eraseOpen);
    $("erase-cancel").addEventListener("click", function () {
      dialogClose("erase-dialog");
    });
    $("erase-confirm").addEventListener("change", function () {
      $("erase-submit").disabled = !$("erase-confirm").checked;
    });
    $("erase-form").addEventListener("submit", onErase);
    window.addEventListener("focus", function () {
      if (!state.me) return;
      // A reminder or a check-in may have arrived in another conversation: its panel and its unread count.
      secretaryLoadSoon();
      conversationsReloadSoon();
    });
    // The socket carries the open conversation only; the others' unread counts are read now and then.
    setInterval(function () {
      if (state.me && document.visibilityState === "visible") {
        conversationsReloadSoon();
        secretaryLoadSoon();
      }
    }, LIST_REFRESH_MS);
    window.addEventListener("storage", onTokensChanged);
    window.addEventListener("hashchange", function () {
      if (state.me) route();
    });
    window.addEventListener("online", function () {
      if (sock.wanted && !sock.ws) socketOpen();
    });
    document.addEventListener("visibilitychange", function () {
      if (document.visibilityState === "visible" && state.current && !sock.ws) {
        sock.wanted = true;
        socketOpen();
      }
    });
    $("composer-input").addEventListener("focus", function () {
      // An idle socket was closed by the server; writing again brings it back.
      if (state.current && !sock.ws) {
        sock.wanted = true;
        socketOpen();
      }
    });
    window.addEventListener("error", function (event) {
      showBanner("Something went wrong in the page (" + (event.message || "error") + "). Reload to continue.");
    });
    window.addEventListener("unhandledrejection", function (event) {
      var reason = event.reason;
      showBanner(reason && reason.message ? reason.message : "Something went wrong. Reload to continue.");
    });
  }

  function start() {
    bind();
    tokensLoad();
    if (!state.tokens) {
      show("auth");
      authTab("signin");
      return;
    }
    enterApp().catch(function (err) {
      if (!state.tokens) return; // the refresh failed: already back at the sign-in form
      show("auth");
      showError("signin-error", err.message);
    });
  }

  // Diagnostics for the console and the browser tests: drop the socket as a network would.
  window.Companion = {
    dropConnection: function () {
      if (sock.ws) sock.ws.close(4000, "dropped");
    },
  };

  start();
})();
