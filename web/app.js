// Shows which protocol the browser used for this page (h2 or h3), from Navigation Timing.
const nav = performance.getEntriesByType("navigation")[0];
if (nav && nav.nextHopProtocol) {
  document.getElementById("proto").textContent = nav.nextHopProtocol;
}
