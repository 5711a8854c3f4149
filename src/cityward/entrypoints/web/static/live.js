// Live parts of a page: an element with data-refresh="URL" is replaced by that URL's HTML every two
// seconds until it says it is final (an element with data-final="yes" inside). No framework: one
// fetch, same origin, with the session cookie; the server renders and escapes everything.
(function () {
  for (const box of document.querySelectorAll("[data-refresh]")) {
    const url = box.getAttribute("data-refresh");
    const tick = async () => {
      if (box.querySelector('[data-final="yes"]')) return;
      try {
        const answer = await fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } });
        if (answer.ok) box.innerHTML = await answer.text();
      } catch (e) { /* the next tick tries again */ }
      setTimeout(tick, 2000);
    };
    setTimeout(tick, 2000);
  }
})();
