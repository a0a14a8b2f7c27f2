// The access token this page was given, for servers run with
// --auth-jwt-secret: `?access_token=` in the page's URL (kept for this tab
// in sessionStorage and taken out of the address bar, so a copied link does
// not carry it), or typed in when the server answers 401.

const KEY = 'bucket-streamer-token';
const params = new URLSearchParams(location.search);
if (params.has('access_token')) {
  sessionStorage.setItem(KEY, params.get('access_token'));
  params.delete('access_token');
  const query = params.toString().replace(/%2F/g, '/');
  history.replaceState(null, '', query ? `?${query}` : location.pathname);
}

let refused = false;

export function token() {
  return sessionStorage.getItem(KEY);
}

// True once the server refused this page for want of a (valid) token.
export function refusedForToken() {
  return refused;
}

// `fetch` with the token; on 401 asks for one once and tries again.
export async function api(url) {
  const headers = token() ? { Authorization: `Bearer ${token()}` } : {};
  const response = await fetch(url, { headers });
  refused = response.status === 401;
  if (refused) {
    const given = window.prompt('This server needs an access token:');
    if (given && given.trim() && given.trim() !== token()) {
      sessionStorage.setItem(KEY, given.trim());
      return api(url);
    }
  }
  return response;
}

// A WebSocket URL with the token (browsers cannot set headers on a WebSocket).
export function withToken(url) {
  const current = token();
  if (!current) return url;
  return `${url}${url.includes('?') ? '&' : '?'}access_token=${encodeURIComponent(current)}`;
}
