"""Logins: the users file, the login that owns a folder (--auth or Hugging Face OAuth), two users
on a served app with auth, and votes that say who cast them."""

from __future__ import annotations

import hashlib
import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from types import SimpleNamespace

import gradio as gr
import pytest

from adapters.errors import LoraEqError
from adapters.files.userfile import hash_password
from adapters.limits import Limits
from playground.app import build_app, launch_settings, make_shared, restore
from playground.jobs import JobQueue
from playground.sessions import Session, SessionArea, login_name, user_folder_name
from playground.shared import ModelRegistry, Shared
from playground.users import LoginThrottle, oauth_enabled, parse_auth, read_users_file

# ---- who may log in ------------------------------------------------------------------------------


def test_auth_user_pass_and_users_files(tmp_path):
    one = parse_auth("ann:secret")
    assert one.names == ["ann"] and one.check("ann", "secret")
    assert not one.check("ann", "secret ") and not one.check("bob", "secret") and not one.check(None, None)
    digest = hashlib.sha256(b"hunter2").hexdigest()
    users = tmp_path / "users.txt"
    users.write_text(f"# team\nann:a:colon:in:it\n\nbob:sha256:{digest.upper()}\n")
    for parsed in (parse_auth(f"@{users}"), parse_auth(None, str(users))):
        assert parsed.names == ["ann", "bob"]
        assert parsed.check("ann", "a:colon:in:it") and parsed.check("bob", "hunter2")
        assert not parsed.check("bob", digest)  # the hash itself is not the password
    assert parse_auth(None) is None and parse_auth("") is None


def test_users_add_writes_a_salted_scrypt_line_and_old_lines_load_with_a_warning(tmp_path, caplog):
    """`loraeq users add` as a user runs it: the password read by getpass (no terminal here, so from
    standard input), twice; the file holds a salted hash, never the password."""
    import subprocess
    import sys

    users = tmp_path / "users.txt"
    digest = hashlib.sha256(b"old-pw").hexdigest()
    users.write_text(f"# team\nbob:sha256:{digest}\neve:plain-pw\n")
    for password in ("first-pw", "ann-pw"):  # the second run replaces ann's line
        done = subprocess.run([sys.executable, "-m", "loraeq", "users", "add", "ann", "--file", str(users)],
                              input=f"{password}\n{password}\n", capture_output=True, text=True, timeout=120,
                              start_new_session=True)
        assert done.returncode == 0, done.stderr
    lines = users.read_text().splitlines()
    [ann] = [line for line in lines if line.startswith("ann:")]
    assert ann.startswith("ann:scrypt:16384:8:1:") and "ann-pw" not in users.read_text() and len(lines) == 4
    with caplog.at_level("WARNING", logger="loraeq.users"):
        parsed = read_users_file(users)
    assert parsed.check("ann", "ann-pw") and not parsed.check("ann", "first-pw") and parsed.check("bob", "old-pw")
    assert parsed.check("eve", "plain-pw") and not parsed.check("nobody", "")
    warned = " ".join(caplog.messages)
    assert "line 2: user 'bob' has an unsalted SHA-256 password" in warned and "line 3: user 'eve' has a plain" in warned
    differ = subprocess.run([sys.executable, "-m", "loraeq", "users", "add", "zed", "--file", str(users)],
                            input="one\ntwo\n", capture_output=True, text=True, timeout=120, start_new_session=True)
    assert differ.returncode == 2 and "the two passwords differ" in differ.stderr and "zed" not in users.read_text()
    salts = {hash_password("same").split(":")[4] for _ in range(2)}
    assert len(salts) == 2  # salted: one password, two different lines


def test_wrong_passwords_lock_a_name_and_an_address_out_for_a_doubling_window():
    now = [0.0]
    throttle = LoginThrottle(Limits(login_failures=5, login_lockout_s=10.0), clock=lambda: now[0])
    for _ in range(4):
        throttle.failed("ann", "1.2.3.4")
    assert throttle.wait("ann", "1.2.3.4") == 0
    throttle.failed("ann", "1.2.3.4")
    assert throttle.wait("ann", "9.9.9.9") == 10 and throttle.wait("bob", "1.2.3.4") == 10  # the name, the address
    assert throttle.wait("bob", "9.9.9.9") == 0  # someone else elsewhere is not held up
    now[0] = 10.5
    assert throttle.wait("ann", "1.2.3.4") == 0
    throttle.failed("ann", "1.2.3.4")  # wrong again right after the window: twice as long
    assert throttle.wait("ann", "9.9.9.9") == 20
    now[0] = 31.0
    throttle.succeeded("ann", "9.9.9.9")
    throttle.failed("ann", "9.9.9.9")
    assert throttle.wait("ann", "8.8.8.8") == 0  # the right password cleared the name's count


@pytest.mark.parametrize("text, message", [
    ("ann:pw\nnopassword\n", "line 2: expected user:password"),
    ("ann:pw\nbob:\n", "line 2: expected user:password"),
    ("ann:pw\n\nann:other\n", "line 3: user 'ann' is already listed"),
    ("bob:sha256:abc\n", "line 1: sha256: must be followed by 64 hex digits"),
    ("b b:pw\n", "line 1: user name 'b b'"),
    ("# nobody\n", "no users in it"),
])
def test_a_bad_users_file_names_its_line(tmp_path, text, message):
    path = tmp_path / "users.txt"
    path.write_text(text)
    with pytest.raises(LoraEqError, match=message):
        read_users_file(path)


def test_bad_auth_flags():
    with pytest.raises(LoraEqError, match="USER:PASS"):
        parse_auth("nopassword")
    with pytest.raises(LoraEqError, match="users file"):
        parse_auth(f"ann:sha256:{'0' * 64}")
    with pytest.raises(LoraEqError, match="either --auth or --users"):
        parse_auth("ann:pw", "users.txt")
    with pytest.raises(LoraEqError, match="cannot be read"):
        parse_auth("@/nonexistent/users.txt")


def test_oauth_is_on_only_in_a_space_with_hf_oauth():
    assert oauth_enabled({"SPACE_ID": "u/s", "OAUTH_CLIENT_ID": "x"})
    assert not oauth_enabled({"SPACE_ID": "u/s"}) and not oauth_enabled({"OAUTH_CLIENT_ID": "x"})


# ---- the login owns the folder -------------------------------------------------------------------


def test_login_names_become_safe_distinct_folders():
    assert user_folder_name("ann") == "ann" and user_folder_name("Ann.B-2") == "Ann.B-2"
    odd = ["../etc", "a b", "a/b", "..", "é", "a_b", "x" * 80]
    names = [user_folder_name(n) for n in odd]
    assert len(set(names)) == len(names)
    assert all("/" not in n and n not in (".", "..") and len(n) <= 64 for n in names)
    assert login_name("ann") == "ann" and login_name("ann", "hf-ann") == "hf-ann" and login_name(None) is None
    with pytest.raises(LoraEqError):
        login_name("  ")


@pytest.fixture
def shared(tmp_path):
    return Shared(ModelRegistry(), JobQueue(), SessionArea(tmp_path / "runs"), None, "fp32")


def test_restore_takes_the_login_from_the_request_or_the_oauth_profile(shared):
    state, saved = restore(shared, {"token": None}, Session(), SimpleNamespace(username="ann"))
    assert state.user == "ann" and shared.area.folder(state) == shared.area.root / "users" / "ann"
    name, _ = shared.area.new_run(state)
    # another browser of the same user: a new session id, the same folder and runs
    other, _ = restore(shared, {"token": None}, Session(), SimpleNamespace(username="ann"))
    assert other.id != state.id and shared.area.runs(other) == [name]
    # the same user's token brings back the run it followed
    state.run = name
    again, _ = restore(shared, {"token": shared.area.token(state)}, Session(), SimpleNamespace(username="ann"))
    assert again.run == name
    # the token cannot carry a run into another login's session
    bob, _ = restore(shared, {"token": shared.area.token(state)}, Session(), SimpleNamespace(username="bob"))
    assert bob.user == "bob" and bob.run is None and shared.area.runs(bob) == []
    profile = gr.OAuthProfile({"name": "Hf Ann", "preferred_username": "hf-ann", "profile": "", "picture": ""})
    hf, _ = restore(shared, {"token": None}, Session(), SimpleNamespace(username=None), profile)
    assert hf.user == "hf-ann" and shared.area.folder(hf).name == "hf-ann"
    anonymous, _ = restore(shared, {"token": None}, Session(), SimpleNamespace(username=None), None)
    assert anonymous.user is None and shared.area.folder(anonymous) == shared.area.root / anonymous.id


def test_the_login_button_appears_only_with_oauth(shared, monkeypatch):
    """As on a Space with `hf_oauth: true` (the variables it sets; nothing is fetched while building)."""
    import gradio.oauth

    monkeypatch.setenv("SYSTEM", "spaces")
    monkeypatch.setenv("SPACE_ID", "someone/loraeq")
    for name, value in (("OAUTH_CLIENT_ID", "id"), ("OAUTH_CLIENT_SECRET", "secret"), ("OAUTH_SCOPES", "openid profile"),
                        ("OPENID_PROVIDER_URL", "https://huggingface.co")):
        monkeypatch.setenv(name, value)
        monkeypatch.setattr(gradio.oauth, name, value)
    assert oauth_enabled()
    with_login = build_app(shared, oauth=True)
    assert with_login.expects_oauth
    assert any(getattr(r, "path", "") == "/login/huggingface" for r in with_login.app.routes)
    assert not build_app(shared).expects_oauth


# ---- votes say who cast them ---------------------------------------------------------------------


def _last_answer():
    """A chat whose one turn the base answered "w3" (as the Compare tab leaves it)."""
    from adapters.infer.conversation import Conversation

    settings = {"max_new_tokens": 4, "temperature": 0.0, "top_p": 1.0, "seed": None, "system": None, "live_eq": None}
    chat = Conversation(["base"])
    reply = chat.ask("w1 w2").replies["base"]
    reply.text, reply.done, reply.settings = "w3", True, settings
    return chat


def test_web_votes_record_the_login_or_an_anonymous_session_hash(shared, tmp_path):
    from adapters.train.runs import RUN_FILE
    from evals.votes import VoteStore
    from playground import tab_compare

    voters = {}
    for who in ("ann", None):
        state = Session(user=who, chat=_last_answer())
        state.run, run = shared.area.new_run(state)
        (run / RUN_FILE).write_text(json.dumps({"model": None, "precision": "fp32", "variants": []}))
        tab_compare.vote(shared, 0, "pass", "", state)
        tab_compare.vote(shared, 0, "fail", "changed my mind", state)  # the voter's later vote replaces it
        [vote] = VoteStore(run).votes()
        assert vote.verdict == "fail"
        voters[who] = (vote.voter, state.id)
    assert voters["ann"][0] == "ann"
    anonymous, sid = voters[None]
    assert anonymous.startswith("anonymous:") and sid not in anonymous and len(anonymous) == len("anonymous:") + 10


def test_one_users_two_browsers_share_one_training_at_a_time(shared):
    from adapters.errors import LoraEqError
    from playground.tab_train import refuse_second_training

    first, second, other = Session(user="ann"), Session(user="ann"), Session()
    assert shared.area.owner(first) == shared.area.owner(second) == "user:ann"
    assert shared.area.owner(other) == other.id and shared.area.folder(other).name == other.id  # retention's key
    # A job of someone else runs first (a worker takes seconds to start), so ann's stays queued meanwhile.
    shared.jobs.submit("run-other", ["status", "/nowhere"], owner="someone", kind="train")
    shared.jobs.submit("run-a", ["status", "/nowhere"], owner=shared.area.owner(first), kind="train")
    with pytest.raises(LoraEqError, match="one training at a time per user: you are already training"):
        refuse_second_training(shared, second)
    refuse_second_training(shared, other)  # another (anonymous) session is not held up


# ---- two users on a served app with auth ---------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from conftest import write_tiny_model

    root = tmp_path_factory.mktemp("users")
    model = write_tiny_model(root / "tiny-llama")
    users = root / "users.txt"
    users.write_text(f"ann:ann-pw\nbob:sha256:{hashlib.sha256(b'bob-pw').hexdigest()}\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LORAEQ_CACHE", str(root / "cache"))
        shared = make_shared(str(model), "fp32", str(root / "runs"))
        demo = build_app(shared)
        port = _free_port()
        demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                    auth=parse_auth(f"@{users}").check, **launch_settings(shared))
        yield shared, f"http://127.0.0.1:{port}/"
        demo.close()


def _client(url, user, password):
    from gradio_client import Client

    client = Client(url, verbose=False, auth=(user, password))
    client.predict({"token": None}, api_name="/restore")
    return client


def test_two_users_each_see_their_own_runs_from_any_browser(served):
    shared, url = served
    request = urllib.request.Request(url + "login", data=urllib.parse.urlencode(
        {"username": "bob", "password": "wrong"}).encode(), method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code in (400, 401)
    with pytest.raises(urllib.error.HTTPError) as anonymous:  # no login: no app
        urllib.request.urlopen(url + "config", timeout=30)
    assert anonymous.value.code == 401

    name, _ = shared.area.new_run(Session(user="ann"))  # ann's earlier run, from another day
    first = _client(url, "ann", "ann-pw")
    table = first.predict(api_name="/my_runs")[0]
    assert [row[0] for row in table["data"]] == [name]
    second = _client(url, "ann", "ann-pw")  # a second browser
    assert [row[0] for row in second.predict(api_name="/my_runs")[0]["data"]] == [name]
    assert name in second.predict(name, api_name="/open_run")

    bob = _client(url, "bob", "bob-pw")
    assert bob.predict(api_name="/my_runs")[0]["data"] in ([], [[None] * 5], [["", "", "", "", ""]])
    for endpoint in ("/open_run", "/delete_run", "/resume_run"):  # refused by the choices, or by our own check
        with pytest.raises(Exception, match="this session has no run|not in the list of choices"):
            bob.predict(name, api_name=endpoint)
    assert (shared.runs_dir / "users" / "ann" / name).is_dir()
    assert sorted(p.name for p in (shared.runs_dir / "users").iterdir()) == ["ann", "bob"]
    assert not [p for p in shared.runs_dir.iterdir() if len(p.name) == 32]  # no anonymous folder was made
