// What the page says about the session's Transport choice. The page cannot pick a protocol:
// the edge proxy offers HTTP/3 (`Alt-Svc: h3=…`) to a session that chose it and withdraws it
// (`Alt-Svc: clear`) from one that chose HTTPS; the browser makes the final pick. So the note
// says that plainly and names the protocol the browser picked for this page.
// Pure (no DOM), unit-tested in web/tests/transport.test.js.

/** A person's name for a protocol as Navigation Timing reports it ("h2", "h3", "http/1.1"). */
export function protocolName(p) {
  if (p === "h3") return "HTTP/3 (h3)";
  if (p === "h2") return "HTTP/2 (h2)";
  if (p === "http/1.1") return "HTTP/1.1";
  return p ? p : "an unknown protocol";
}

/**
 * The note for a session that chose `transport` ("https" or "h3"), on a page that came over
 * `page` (Navigation Timing's nextHopProtocol; "" when the browser does not say). "" for no
 * choice.
 */
export function transportNote(transport, page) {
  const over = `this page came over ${protocolName(page)}`;
  const inspector = "The Inspector shows which protocol each request used.";
  const unknown = "Your browser does not say which protocol this page came over.";
  if (transport === "https") {
    const base = "You chose HTTPS (HTTP/1.1 or HTTP/2). Your browser makes the final pick of protocol; the edge tells it not to use HTTP/3 for this site (Alt-Svc: clear).";
    if (page === "h3") {
      return `${base} Your browser still uses HTTP/3 here: ${over}, since it learnt HTTP/3 before this session; it moves to TCP once it has dropped that (reload the page). ${inspector}`;
    }
    if (!page) return `${base} ${unknown} ${inspector}`;
    return `${base} It picked TCP: ${over}. ${inspector}`;
  }
  if (transport === "h3") {
    const base = "You chose HTTP/3. Your browser makes the final pick of protocol; the edge advertises HTTP/3 to it (Alt-Svc).";
    if (page === "h3") return `${base} It picked HTTP/3: ${over}. ${inspector}`;
    if (!page) return `${base} ${unknown} ${inspector}`;
    return `${base} It has not switched yet: ${over}. Browsers move to HTTP/3 by themselves once they have seen the advertisement (reload the page), and stay on TCP when UDP is blocked. ${inspector}`;
  }
  return "";
}
