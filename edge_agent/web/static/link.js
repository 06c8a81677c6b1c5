// A screen's link to the agent, shared by the staff page and the gate page: pairs once with
// the code in the address, keeps the token it gets, and listens to the agent's pushes
// (Server-Sent Events read with fetch, so the token travels in a header, not the URL).
"use strict";

// No byte for this long (the agent says something every 10 s) means the link is dead.
const LINK_SILENT_MS = 25000;
const LINK_BACKOFF_MS = [500, 1000, 2000, 5000];

// The frames of an event stream in `buffer`, each handed to onFrame(event, body); returns
// what is left of a frame not yet whole.
function linkFrames(buffer, onFrame) {
  let rest = buffer;
  for (let at = rest.indexOf("\n\n"); at >= 0; at = rest.indexOf("\n\n")) {
    const frame = { event: "message", data: "" };
    for (const line of rest.slice(0, at).split("\n")) {
      if (line.startsWith("event: ")) frame.event = line.slice(7);
      else if (line.startsWith("data: ")) frame.data += line.slice(6);
    }
    if (frame.data) onFrame(frame.event, JSON.parse(frame.data));
    rest = rest.slice(at + 2);
  }
  return rest;
}

// The link of one page. `page` gives:
//   tokenKey: where the token is kept in the browser;
//   setLink(state, text): the link badge ("live", "down", "connecting");
//   notice(title, text): a message that replaces the page's figures;
//   onEvent(event, body): each pushed event but "locked" ("trouble" included).
function screenLink(page) {
  function lockOut() {
    localStorage.removeItem(page.tokenKey);
    page.setLink("down", "Locked out");
    page.notice(
      "This screen is locked out",
      "It may not show anything any more. Ask the site's installer to pair this screen again.",
    );
  }

  // One connection to the push stream; resolves "locked" when the screen may not listen any more.
  async function listen(token) {
    const abort = new AbortController();
    let watchdog = setTimeout(() => abort.abort(), LINK_SILENT_MS);
    try {
      const response = await fetch("/v1/screen/stream?k=5", {
        headers: { Authorization: `Bearer ${token}` },
        cache: "no-store",
        signal: abort.signal,
      });
      if (response.status === 401) return "locked";
      if (!response.ok) throw new Error(`the agent answered ${response.status}`);
      page.setLink("live", "Live");
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      let locked = false;
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return "closed";
        clearTimeout(watchdog);
        watchdog = setTimeout(() => abort.abort(), LINK_SILENT_MS);
        buffer = linkFrames(buffer + decoder.decode(value, { stream: true }), (event, body) => {
          if (event === "locked") locked = true;
          else page.onEvent(event, body);
        });
        if (locked) return "locked";
      }
    } finally {
      clearTimeout(watchdog);
      abort.abort();
    }
  }

  async function stayConnected(token) {
    for (let failures = 0; ; ) {
      let outcome;
      try {
        outcome = await listen(token);
        failures = 0;
      } catch (error) {
        outcome = "failed";
      }
      if (outcome === "locked") {
        lockOut();
        return;
      }
      page.setLink("down", "Reconnecting…");
      const wait = LINK_BACKOFF_MS[Math.min(failures, LINK_BACKOFF_MS.length - 1)];
      await new Promise((resolve) => setTimeout(resolve, wait));
      failures += 1;
    }
  }

  async function pair(code) {
    // The code leaves the address bar at once: it must not linger in history.
    history.replaceState(null, "", location.pathname);
    const response = await fetch("/v1/pair", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ code }),
    });
    if (!response.ok) {
      // Staff words, not the API's: the installer has the commands.
      page.notice(
        "This pairing code does not work",
        response.status === 429
          ? "Too many wrong codes were tried from this screen. Wait a minute, then open the pairing address again."
          : "It was used already or has expired. Ask the site's installer for a new pairing address.",
      );
      return null;
    }
    const { token } = await response.json();
    localStorage.setItem(page.tokenKey, token);
    return token;
  }

  // Pair with the address's code if it has one, then stay connected with the token kept.
  async function start() {
    const code = new URLSearchParams(location.hash.slice(1)).get("pair");
    let token = localStorage.getItem(page.tokenKey);
    if (code) {
      try {
        token = await pair(code);
      } catch (error) {
        page.notice("The agent cannot be reached", "Check the screen's network, then open the pairing address again.");
        return;
      }
      if (!token) return;
    }
    if (!token) {
      page.setLink("down", "Not paired");
      page.notice(
        "This screen is not paired",
        "Ask the site's installer to pair this screen: they open its pairing address on it.",
      );
      return;
    }
    stayConnected(token);
  }

  return { start };
}
