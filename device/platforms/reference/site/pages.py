"""The reference site's HTML pages: plain markup and a little vanilla JavaScript. Element ids
are the contract with `device/platforms/reference/locators.toml`."""

from __future__ import annotations

from html import escape

STYLE = """<style>body{font-family:sans-serif;max-width:40em;margin:2em auto}label{display:block;margin:.6em 0}
#error{color:#b00}</style>"""


# How a page shows a failure in #error: FastAPI answers a string, or a list of {loc, msg}
# for input it refused.
SHOW_ERROR = """
function describe(detail) {
  return Array.isArray(detail) ? detail.map((d) => `${(d.loc || []).slice(1).join('.')}: ${d.msg}`).join('; ') : String(detail);
}
function showError(text) {
  document.getElementById('outcome').innerHTML = '<div id="error"></div>';
  document.getElementById('error').textContent = text;
}"""


def layout(title: str, body: str) -> str:
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>{STYLE}</head><body>{body}</body></html>"


def login_page(token: str) -> str:
    return layout("Log in", f"""
<h1>Log in</h1>
<p>Scan the code with the app on your phone.</p>
<img id="qr" data-token="{escape(token)}" src="/login/qr.png?token={escape(token)}" alt="QR code" width="200" height="200">
<div id="login-status">waiting for scan</div>
<form id="sms-form" hidden>
  <label>Code sent to your phone <input id="sms-code" autocomplete="one-time-code"></label>
  <button id="sms-submit" type="submit">Verify</button>
</form>
<script>
const token = {token!r};
const status = document.getElementById('login-status');
const form = document.getElementById('sms-form');
async function poll() {{
  const state = await (await fetch('/login/state?token=' + encodeURIComponent(token))).json();
  if (state.state === 'done') {{ location.href = '/login/finish?token=' + encodeURIComponent(token); return; }}
  if (state.state === 'needs_code' && form.hidden) {{ form.hidden = false; status.textContent = 'enter the code'; }}
  setTimeout(poll, 300);
}}
form.addEventListener('submit', async (event) => {{
  event.preventDefault();
  status.textContent = 'checking code';
  const answer = await fetch('/login/code', {{method: 'POST', headers: {{'content-type': 'application/json'}},
    body: JSON.stringify({{token, code: document.getElementById('sms-code').value}})}});
  const result = await answer.json();
  status.textContent = result.ok ? 'code accepted' : 'wrong code';
}});
poll();
</script>""")


def phone_page(token: str, account: str) -> str:
    """The approval form for the login `token`, offering `account` (the one the scan link names;
    empty when it names none, and then the person must type one)."""
    return layout("Your phone", f"""
<h1>Approve the login</h1>
<form method="post" action="/_phone/approve">
  <input type="hidden" name="token" value="{escape(token)}">
  <label>Log in as <input name="account" value="{escape(account)}" required></label>
  <label><input type="checkbox" name="sms" value="1"> also ask for an SMS code</label>
  <button>Approve</button>
</form>""")


def phone_done(state: str, code: str | None) -> str:
    sms = f"<p>SMS received: your code is <b>{escape(code)}</b></p>" if code else ""
    return layout("Your phone", f"<h1>Approved</h1><p>login state: {escape(state)}</p>{sms}")


def home_page(account: str) -> str:
    return layout("Home", f"""
<h1>Welcome, <span id="account-name">{escape(account)}</span></h1>
<p><a href="/upload">Upload a video</a> · <a href="/messages">Messages</a> · <a id="logout" href="/logout">Log out</a></p>""")


def upload_page() -> str:
    return layout("Upload", """
<h1>Upload a video</h1>
<label>Video <input type="file" id="video-file" accept="video/*"></label>
<progress id="upload-progress" max="100" value="0"></progress>
<label>Title <input id="title"></label>
<label>Tags (comma-separated) <input id="tags"></label>
<label>Cover <input type="file" id="cover-file" accept="image/*"></label>
<label>Publish at (UTC) <input type="datetime-local" id="publish-at"></label>
<button id="publish" disabled>Publish</button>
<div id="outcome"></div>
<script>
let uploadId = null;
const bar = document.getElementById('upload-progress');
const publish = document.getElementById('publish');
""" + SHOW_ERROR + """
function send(file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', '/api/upload?name=' + encodeURIComponent(file.name));
    xhr.upload.onprogress = (e) => { if (e.lengthComputable && onProgress) onProgress(100 * e.loaded / e.total); };
    xhr.onload = () => xhr.status === 200 ? resolve(JSON.parse(xhr.responseText).upload_id)
                                          : reject(new Error(xhr.responseText));
    xhr.onerror = () => reject(new Error('the upload was interrupted'));
    xhr.send(file);
  });
}
document.getElementById('video-file').addEventListener('change', async (event) => {
  publish.disabled = true;
  try {
    uploadId = await send(event.target.files[0], (p) => { bar.value = p; });
    bar.value = 100;
    publish.disabled = false;
  } catch (error) { showError('upload failed: ' + error.message); }
});
publish.addEventListener('click', async () => {
  publish.disabled = true;
  try {
    const cover = document.getElementById('cover-file').files[0];
    const coverId = cover ? await send(cover) : null;
    const tags = document.getElementById('tags').value.split(',').map((t) => t.trim()).filter(Boolean);
    const answer = await fetch('/api/publish', {method: 'POST', headers: {'content-type': 'application/json'},
      body: JSON.stringify({upload_id: uploadId, cover_id: coverId, title: document.getElementById('title').value,
                            tags, publish_at: document.getElementById('publish-at').value || null})});
    const result = await answer.json();
    if (!answer.ok) { showError(describe(result.detail)); publish.disabled = false; return; }
    document.getElementById('outcome').innerHTML = '<div id="publish-result">published</div>';
    document.getElementById('publish-result').dataset.videoId = result.video_id;
  } catch (error) { showError(error.message); publish.disabled = false; }
});
</script>""")


def messages_page() -> str:
    return layout("Messages", """
<h1>Send a message</h1>
<label>To <input id="to"></label>
<label>Message <textarea id="message"></textarea></label>
<button id="send">Send</button>
<div id="outcome"></div>
<script>
""" + SHOW_ERROR + """
document.getElementById('send').addEventListener('click', async () => {
  const answer = await fetch('/api/send', {method: 'POST', headers: {'content-type': 'application/json'},
    body: JSON.stringify({to: document.getElementById('to').value, message: document.getElementById('message').value})});
  const result = await answer.json();
  if (answer.ok) { document.getElementById('outcome').innerHTML = '<div id="send-result">sent</div>'; return; }
  showError(describe(result.detail));
});
</script>""")
