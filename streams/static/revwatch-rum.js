/*! revwatch-rum.js: sends Core Web Vitals to a revwatch collector. No dependencies, ES2017.
 *
 * Load it after web-vitals' IIFE build (web-vitals/dist/web-vitals.iife.js, which defines
 * `webVitals`), and name the collector with either
 *   <script>window.REVWATCH = {endpoint: "https://collector.example/beacon"};</script>
 * or a data-endpoint attribute on this script's tag. Optional: `pageGroup` / data-page-group,
 * `campaign` / data-campaign (overrides utm_campaign).
 *
 * Each metric (LCP, INP, CLS, TTFB, FCP) is sent once, as JSON text/plain via
 * navigator.sendBeacon (no CORS preflight), else fetch(keepalive). The record:
 *   {name, value, id, navigationId?, rating, session_id, page_view_id, page_ts, page_url,
 *    sent_at, page_group?, campaign?, referrer?}
 * referrer is the origin of document.referrer (never its path or query), absent when the
 * page has none: a referrer of the page's own origin says it was reached from the site.
 * session_id lives in localStorage (else sessionStorage, else memory) and expires after
 * 30 minutes without a page view or metric; page_view_id is new on every page load.
 */
(function () {
  "use strict";
  const KEY = "revwatch_session";
  const IDLE_MS = 30 * 60 * 1000;
  const script = document.currentScript;
  const config = window.REVWATCH || {};
  const attr = (name) => (script && script.getAttribute(name)) || undefined;
  const endpoint = config.endpoint || attr("data-endpoint");
  const vitals = window.webVitals;
  if (!endpoint || !vitals) {
    console.warn("revwatch-rum: needs an endpoint and web-vitals loaded first");
    return;
  }

  function randomHex(bytes) {
    const values = new Uint8Array(bytes);
    crypto.getRandomValues(values);
    return Array.from(values, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function newId() {
    return crypto.randomUUID ? crypto.randomUUID() : randomHex(16);
  }

  function pickStore() {
    for (const name of ["localStorage", "sessionStorage"]) {
      try {
        const store = window[name];
        store.setItem(KEY + "_probe", "1");
        store.removeItem(KEY + "_probe");
        return store;
      } catch (e) { /* blocked (privacy mode, sandbox): try the next one */ }
    }
    const memory = {};
    return {getItem: (k) => memory[k] || null, setItem: (k, v) => { memory[k] = String(v); }};
  }

  const store = pickStore();

  function save(id, now) {
    try { store.setItem(KEY, JSON.stringify({id: id, last: now})); } catch (e) { /* full */ }
  }

  function startSession(now) {
    let saved = null;
    try { saved = JSON.parse(store.getItem(KEY) || "null"); } catch (e) { saved = null; }
    const fresh = saved && typeof saved.id === "string" && now - saved.last < IDLE_MS;
    const id = fresh ? saved.id : newId();
    save(id, now);
    return id;
  }

  function originOf(url) {
    try {
      const origin = new URL(url).origin;
      return origin === "null" ? undefined : origin;  // "null": file:, data:, ...
    } catch (e) {
      return undefined;  // no referrer ("") or not a URL
    }
  }

  const sessionId = startSession(Date.now());
  const pageViewId = randomHex(8);
  const pageTs = Math.round(performance.timeOrigin || Date.now() - performance.now());
  const pageGroup = config.pageGroup || attr("data-page-group");
  const campaign = config.campaign || attr("data-campaign");
  const referrer = originOf(document.referrer);

  function send(body) {
    try {
      if (navigator.sendBeacon && navigator.sendBeacon(endpoint, body)) return;
    } catch (e) { /* fall back to fetch */ }
    fetch(endpoint, {method: "POST", body: body, keepalive: true, mode: "no-cors"})
      .catch(() => {});
  }

  function report(metric) {
    const now = Date.now();
    save(sessionId, now);  // activity on this page keeps its session alive
    const record = {
      name: metric.name, value: metric.value, id: metric.id, rating: metric.rating,
      session_id: sessionId, page_view_id: pageViewId, page_ts: pageTs,
      page_url: location.href.split("#")[0], sent_at: now,
    };
    if (metric.navigationId !== undefined) record.navigationId = metric.navigationId;
    if (pageGroup) record.page_group = pageGroup;
    if (campaign) record.campaign = campaign;
    if (referrer) record.referrer = referrer;
    send(JSON.stringify(record));
  }

  const options = {reportAllChanges: false};
  for (const on of ["onLCP", "onINP", "onCLS", "onTTFB", "onFCP"]) {
    if (typeof vitals[on] === "function") vitals[on](report, options);
  }
})();
