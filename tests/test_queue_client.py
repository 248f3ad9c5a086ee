"""vkclient (scripts/queue) against a loopback fake ComfyUI: the protocol paths and every error path.

The fake (vk_testing.fake_comfy) answers like ComfyUI 0.3.64 (same routes, same JSON shapes, websocket
frames incl. binary previews, fragments and pings); the real server is tests/test_t2_queue.py.
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest

from vk_testing import ROOT
from vk_testing.fake_comfy import FakeComfy, import_vkclient

vk = import_vkclient()
from vkclient import cli  # noqa: E402  (importable once import_vkclient() registered the package)

IMAGE = bytes(random.Random(0).randrange(256) for _ in range(3000)) + b"\r\n--\r\n\x00end"  # multipart-hostile


def graph(title_save="Save", text="hello") -> dict:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": "placeholder.png"}, "_meta": {"title": "Photo"}},
        "2": {"class_type": "Upscale", "inputs": {"image": ["1", 0], "seed": 7, "tile_size": 512},
              "_meta": {"title": "Upscale"}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "vk"},
              "_meta": {"title": title_save}},
        "4": {"class_type": "ShowText", "inputs": {"text": text}, "_meta": {"title": "Readout"}},
    }


@pytest.fixture()
def fake():
    with FakeComfy() as f:
        yield f


@pytest.fixture()
def files(tmp_path):
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(graph()))
    img = tmp_path / "photo.png"
    img.write_bytes(IMAGE)
    return wf, img, tmp_path / "out"


def run_cli(capsys, *args):
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------- the normal path
def test_queue_uploads_follows_websocket_and_downloads(fake, files, tmp_path):
    wf, img, out = files
    fake.files[("input", "", "photo.png")] = b"someone else's photo"  # the server renames our upload
    client = vk.Client(fake.url)
    events = []
    job = client.queue(vk.load_workflow(wf), images={"Photo.image": img})
    result = job.wait(progress=events.append, timeout=30)

    assert fake.uploads[0]["content"] == IMAGE and fake.uploads[0]["fields"]["type"] == "input"
    posted = fake.prompts[0]
    assert posted["prompt"]["1"]["inputs"]["image"] == "photo (1).png"  # the name the server gave
    assert posted["client_id"] == job.client_id
    assert result.used_websocket and fake.ws_connects == 1
    kinds = [e.kind for e in events]
    assert kinds[0] == "queued" and "started" in kinds
    assert [e.node for e in events if e.kind == "executing"] == ["1", "2", "3", "4"]
    steps = [(e.node, e.value, e.max) for e in events if e.kind == "progress"]
    assert ("2", 2, 2) in steps, steps  # the fragmented message, reassembled (a ping came in between)
    assert fake.pongs >= 1
    assert str([e for e in events if e.kind == "executing"][1]) == "node 2 (Upscale) executing"
    assert "execution_success" in result.events and result.status["status_str"] == "success"
    assert result.outputs["4"] == {"text": ["hello"]}

    paths = client.download_outputs(result, out)
    assert len(paths) == 1 and paths[0].parent == out and paths[0].read_bytes() == IMAGE
    assert result.files == paths
    again = client.download(result.file_refs()[0], out)  # never overwrites: a numbered name
    assert again != paths[0] and again.read_bytes() == IMAGE


def test_cli_end_to_end_with_json_summary(fake, files, capsys):
    wf, img, out = files
    code, stdout, stderr = run_cli(capsys, wf, "--server", fake.url, "--image", img, "--set", "Upscale.tile_size=256",
                                   "--set", "4.text=a long readout", "-o", out, "--json")
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["ok"] is True and len(summary["jobs"]) == 1
    job = summary["jobs"][0]
    assert job["status"] == "success" and job["websocket"] is True and job["server"] == fake.url
    assert [open(p, "rb").read() for p in job["files"]] == [IMAGE]
    assert job["outputs"]["4"] == {"text": ["a long readout"]}
    inputs = fake.prompts[0]["prompt"]["2"]["inputs"]
    assert inputs["tile_size"] == 256 and inputs["seed"] == 7
    assert "node 2 (Upscale) executing" in stderr and "node 3 (SaveImage, 'Save') 2/2" in stderr, stderr
    assert f"queued on {fake.url}" in stderr


def test_cli_human_summary_prints_files_and_readouts(fake, files, capsys):
    wf, img, out = files
    code, stdout, stderr = run_cli(capsys, wf, "--server", fake.url, "--image", img, "-o", out, "-q")
    assert code == 0, stderr
    assert stderr == ""  # --quiet
    assert "done in" in stdout and str(out) in stdout and 'node 4 text: ["hello"]' in stdout


def test_scripts_queue_launcher(fake, files):
    wf, img, out = files
    proc = subprocess.run([str(ROOT / "scripts" / "queue"), str(wf), "--server", fake.url, "--image", str(img),
                           "-o", str(out), "--json"], capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONSAFEPATH"})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["jobs"][0]["status"] == "success"
    assert [p.read_bytes() for p in out.iterdir()] == [IMAGE]


# ---------------------------------------------------------------- what the server refuses or fails
REJECTION = {
    "error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
              "details": "Value not in list: model_name: 'nope.pth' not in ['a.pth', 'b.pth']", "extra_info": {}},
    "node_errors": {
        "2": {"errors": [{"type": "value_not_in_list", "message": "Value not in list",
                          "details": "model_name: 'nope.pth' not in ['a.pth', 'b.pth']",
                          "extra_info": {"input_name": "model_name", "input_config": None,
                                         "received_value": "nope.pth"}},
                         {"type": "custom_validation_failed", "message": "Failed to validate prompt for output 3",
                          "details": "tile_size 4 must be 0 (whole image) or between 32 and 8192",
                          "extra_info": {"input_name": "tile_size"}}],
              "dependent_outputs": ["3"], "class_type": "Upscale"},
    },
}


def test_validation_error_is_printed_per_node_with_non_zero_exit(fake, files, capsys):
    wf, img, out = files
    fake.reject = REJECTION
    code, stdout, stderr = run_cli(capsys, wf, "--server", fake.url, "--image", img, "-o", out)
    assert code == 1
    lines = stderr.splitlines()
    assert any("the server rejected the prompt: Prompt outputs failed validation" in ln for ln in lines), stderr
    i = next(k for k, ln in enumerate(lines) if ln.strip() == "node 2 (Upscale):")
    assert lines[i + 1].strip() == "- input 'model_name': Value not in list"
    assert lines[i + 2].strip() == "model_name: 'nope.pth' not in ['a.pth', 'b.pth']"
    assert lines[i + 3].strip() == "- input 'tile_size': Failed to validate prompt for output 3"
    assert "must be 0 (whole image)" in lines[i + 4]
    assert fake.history == {} and not out.exists()

    with pytest.raises(vk.PromptRejected) as info:
        vk.Client(fake.url).queue(graph())
    assert info.value.node_errors == REJECTION["node_errors"] and info.value.status == 400


def test_unknown_node_type_rejection_says_what_to_check(fake, capsys, tmp_path):
    fake.reject = {"error": {"type": "invalid_prompt", "message": "Cannot execute because node Foo does not exist.",
                             "details": "Node ID '#1'", "extra_info": {}}, "node_errors": {}}
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps({"1": {"class_type": "Foo", "inputs": {}}}))
    code, _, stderr = run_cli(capsys, wf, "--server", fake.url)
    assert code == 1 and "node Foo does not exist" in stderr and "Node ID '#1'" in stderr
    assert "custom node pack installed" in stderr


@pytest.mark.parametrize("ws_mode", ["ok", "refuse"])
def test_execution_error_exits_with_the_exception_message(fake, files, capsys, ws_mode):
    wf, img, out = files
    fake.fail_node, fake.ws_mode = "2", ws_mode
    code, stdout, stderr = run_cli(capsys, wf, "--server", fake.url, "--image", img, "-o", out, "--json")
    assert code == 1
    assert "FAILED" in stderr and "node 2 (Upscale) failed: RuntimeError: boom: the tile is too large" in stderr
    job = json.loads(stdout)["jobs"][0]
    assert job["status"] == "error" and job["node_id"] == "2" and job["exception_type"] == "RuntimeError"

    job = vk.Client(fake.url).queue(graph(), websocket=ws_mode == "ok")
    with pytest.raises(vk.ExecutionFailed) as info:
        job.wait(timeout=30)
    e = info.value
    assert (e.node_id, e.node_type, e.exception_message) == ("2", "Upscale", fake.fail_message)


def test_server_down_is_a_clear_message(capsys, files):
    wf, img, out = files
    with FakeComfy() as f:
        url = f.url  # a port that just stopped listening
    code, stdout, stderr = run_cli(capsys, wf, "--server", url, "--image", img, "-o", out)
    assert code == 3
    assert f"cannot reach ComfyUI at {url}" in stderr and "refused" in stderr.lower() and "Traceback" not in stderr
    with pytest.raises(vk.ServerUnreachable, match="is it running"):
        vk.Client(url).queue(graph())


def test_timeout_cancels_the_prompt(fake, files, capsys):
    wf, img, out = files
    fake.hang = True
    code, stdout, stderr = run_cli(capsys, wf, "--server", fake.url, "--image", img, "--timeout", "0.5", "--json")
    assert code == 1
    assert "did not finish within 0.5 s (it was still waiting in the server's queue)" in stderr, stderr
    summary = json.loads(stdout)["jobs"][0]
    assert summary["status"] == "timeout"
    assert fake.cancelled == [("delete", [summary["prompt_id"]])]  # waiting: taken off the queue


def test_timeout_while_running_interrupts_that_prompt_only(fake, files):
    wf, img, out = files
    fake.node_delay = 2.0
    job = vk.Client(fake.url).queue(vk.load_workflow(wf), images=[img])
    with pytest.raises(vk.JobTimeout, match=r"within 0.3 s \(it was running node 1 \(LoadImage\)\)"):
        job.wait(timeout=0.3)
    assert vk.Client(fake.url).cancel(job.prompt_id) == "interrupted"
    assert fake.cancelled == [("interrupt", {"prompt_id": job.prompt_id})]
    assert vk.Client(fake.url).cancel("not-queued") is None and len(fake.cancelled) == 1


def test_client_imports_only_the_standard_library():
    code = ("import sys\n"
            "sys.path.insert(0, sys.argv[1])\n"
            "import vkclient, vkclient.cli\n"
            "top = {m.split('.')[0] for m in sys.modules}\n"
            "print(sorted(top - set(sys.stdlib_module_names) - {'vkclient', '__main__'}))\n")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code, str(ROOT)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout


# ---------------------------------------------------------------- websocket trouble
@pytest.mark.parametrize("ws_mode", ["refuse", "drop"])
def test_websocket_failure_falls_back_to_polling_history(fake, files, ws_mode):
    wf, img, out = files
    fake.ws_mode, fake.node_delay = ws_mode, 0.05
    client = vk.Client(fake.url)
    events = []
    result = client.queue(vk.load_workflow(wf), images=[img]).wait(progress=events.append, timeout=30,
                                                                     poll_interval=0.05)
    polling = [e for e in events if e.kind == "polling"]
    assert len(polling) == 1, events
    assert ("404" in polling[0].text) if ws_mode == "refuse" else ("websocket lost" in polling[0].text)
    assert result.used_websocket is (ws_mode == "drop")
    assert result.status["status_str"] == "success"
    assert [p.read_bytes() for p in client.download_outputs(result, out)] == [IMAGE]


def test_large_websocket_messages(fake, files):
    wf, img, out = files
    big = "x" * 70000  # an executed message over 65535 bytes: the 64-bit length form
    prompt = vk.apply_overrides(vk.load_workflow(wf), {"4.text": big})
    events = []
    result = vk.Client(fake.url).queue(prompt, images=[img]).wait(progress=events.append, timeout=30)
    executed = [e for e in events if e.kind == "executed" and e.node == "4"]
    assert executed and executed[0].data == {"text": [big]}
    assert result.outputs["4"]["text"] == [big]


# ---------------------------------------------------------------- several servers
def test_batch_spreads_over_servers_concurrently(files, capsys):
    wf, img, out = files
    with FakeComfy() as a, FakeComfy() as b:
        a.node_delay = b.node_delay = 0.1
        code, stdout, stderr = run_cli(capsys, wf, "--server", a.url, "--server", b.url, "--image", img,
                                       "--repeat", "6", "--seed-random", "-o", out, "--json")
        assert code == 0, stderr
        jobs = json.loads(stdout)["jobs"]
        assert [j["status"] for j in jobs] == ["success"] * 6
        assert len(a.prompts) + len(b.prompts) == 6 and len(a.prompts) >= 2 and len(b.prompts) >= 2
        assert a.max_running == 1 and b.max_running == 1  # --per-server 1
        assert any(s1 < e2 and s2 < e1 for s1, e1 in a.intervals for s2, e2 in b.intervals), "never concurrent"
        seeds = [p["prompt"]["2"]["inputs"]["seed"] for p in a.prompts + b.prompts]
        assert len(set(seeds)) == 6 and 7 not in seeds
        assert all(p["prompt"]["2"]["inputs"]["tile_size"] == 512 for p in a.prompts + b.prompts)
        assert len(a.uploads) == 1 and len(b.uploads) == 1  # one upload per server
        downloaded = sorted(out.iterdir())
        assert len(downloaded) == 6 and all(p.read_bytes() == IMAGE for p in downloaded)
        assert {j["server"] for j in jobs} == {a.url, b.url}
        assert "[wf.json #3]" in stderr


def test_batch_prefers_the_least_busy_and_skips_dead_servers(files):
    wf, img, out = files
    with FakeComfy() as dead:
        dead_url = dead.url
    with FakeComfy() as busy, FakeComfy() as idle:
        busy.load = 3
        items = vk.run_batch([busy.url, idle.url], [vk.BatchJob(graph(), name="one")])
        assert items[0].ok and items[0].server == idle.url and busy.prompts == []

        events = []
        items = vk.run_batch([dead_url, idle.url], [graph(), graph(text="b"), graph(text="c")], progress=events.append)
        assert [it.ok for it in items] == [True] * 3 and {it.server for it in items} == {idle.url}
        assert sorted(it.result.outputs["4"]["text"][0] for it in items) == ["b", "c", "hello"]
        assert {e.job for e in events if e.kind == "done"} == {"job 1", "job 2", "job 3"}

    items = vk.run_batch([dead_url], [graph()])
    assert isinstance(items[0].error, vk.ServerUnreachable) and "no server could be reached" in str(items[0].error)


# ---------------------------------------------------------------- overrides, files, formats
def test_overrides_name_nodes_by_id_title_or_class():
    p = graph()
    out = vk.apply_overrides(p, ["2.seed=3", "Save.filename_prefix=run", "ShowText.text=0.5", 'Readout.text="3"',
                                 "Upscale.tile_size=[1, 2]", "1.image=a photo.png", "save.filename_prefix=x"])
    assert out["2"]["inputs"]["seed"] == 3 and out["3"]["inputs"]["filename_prefix"] == "x"
    assert out["4"]["inputs"]["text"] == "3" and out["2"]["inputs"]["tile_size"] == [1, 2]
    assert out["1"]["inputs"]["image"] == "a photo.png"
    assert p == graph(), "the original prompt was changed"
    assert vk.apply_overrides(p, ["ShowText.text=0.5"])["4"]["inputs"]["text"] == 0.5


@pytest.mark.parametrize("override, message", [
    ("9.seed=1", "no node '9' in the workflow"),
    ("Sampler.seed=1", "Nodes: 1 (LoadImage, 'Photo'), 2 (Upscale), 3 (SaveImage, 'Save'), 4 (ShowText, 'Readout')"),
    ("2.steps=4", "node 2 (Upscale) has no input 'steps'; its inputs: image, seed, tile_size"),
    ("SaveImage.images", "must be NODE.INPUT=VALUE"),
    ("seed=3", "must be NODE.INPUT"),
    ("Twin.x=1", "'Twin' matches the title of 2 nodes: 5 (A, 'Twin'), 6 (B, 'Twin'); use the node id instead"),
])
def test_override_errors_list_the_candidates(override, message):
    p = {**graph(), "5": {"class_type": "A", "inputs": {"x": 0}, "_meta": {"title": "Twin"}},
         "6": {"class_type": "B", "inputs": {"x": 0}, "_meta": {"title": "Twin"}}}
    if override.startswith("Sampler"):
        p = graph()
    with pytest.raises(vk.WorkflowError) as info:
        vk.apply_overrides(p, [override])
    assert message in str(info.value)


def test_override_of_an_input_the_server_knows(fake, files, capsys):
    wf, img, out = files
    fake.object_info["Upscale"] = {"input": {"required": {"image": ["IMAGE", {}]},
                                             "optional": {"alpha_upscale": [["network", "bicubic"], {}]}}}
    code, _, stderr = run_cli(capsys, wf, "--server", fake.url, "--image", img, "-o", out,
                              "--set", "Upscale.alpha_upscale=bicubic")
    assert code == 0, stderr
    assert fake.prompts[0]["prompt"]["2"]["inputs"]["alpha_upscale"] == "bicubic"
    code, _, stderr = run_cli(capsys, wf, "--server", fake.url, "--set", "Upscale.nonsense=1")
    assert code == 2 and "its inputs: alpha_upscale, image, seed, tile_size" in stderr
    assert len(fake.prompts) == 1


def test_ui_format_file_is_recognised(tmp_path, capsys, fake):
    ui = tmp_path / "canvas.json"
    ui.write_text(json.dumps({"last_node_id": 3, "nodes": [{"id": 1, "type": "LoadImage"}], "links": [],
                              "version": 0.4}))
    code, _, stderr = run_cli(capsys, ui, "--server", fake.url)
    assert code == 2 and "canvas (UI-format) workflow" in stderr and "Workflow → Export (API)" in stderr
    assert fake.prompts == []

    wrapped = tmp_path / "body.json"
    wrapped.write_text(json.dumps({"prompt": graph(), "client_id": "x"}))
    assert vk.load_workflow(wrapped) == graph()
    for text, message in (("{nope", "is not valid JSON"), ('{"1": {"inputs": {}}}', "has no class_type"),
                          ("[]", "not an API-format workflow")):
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        with pytest.raises(vk.WorkflowError, match=message):
            vk.load_workflow(bad)
    with pytest.raises(vk.WorkflowError, match="does not exist"):
        vk.load_workflow(tmp_path / "missing.json")


def test_image_arguments(fake, files, capsys, tmp_path):
    wf, img, out = files
    code, _, stderr = run_cli(capsys, wf, "--server", fake.url, "--image", img, "--image", img)
    assert code == 2 and "2 image(s) given without a target" in stderr and "1 LoadImage node(s)" in stderr
    code, _, stderr = run_cli(capsys, wf, "--server", fake.url, "--image", tmp_path / "nope.png")
    assert code == 2 and "no such file" in stderr
    code, _, stderr = run_cli(capsys, wf, "--server", fake.url, "--image", f"Nothing.image={img}")
    assert code == 2 and "no node 'Nothing'" in stderr
    assert fake.uploads == [] and fake.prompts == []
    odd = tmp_path / "a=b.png"  # a file whose name has '=' is a file, not a target
    odd.write_bytes(IMAGE)
    assert cli.parse_image_arg(str(odd)) == (None, str(odd))
    assert cli.parse_image_arg("Photo.image=x.png") == ("Photo.image", "x.png")


def test_download_keeps_files_inside_the_output_folder(fake, tmp_path):
    fake.files[("output", "", "../../evil.png")] = b"data"
    path = vk.Client(fake.url).download({"filename": "../../evil.png", "subfolder": "", "type": "output"},
                                        tmp_path / "out")
    assert path.parent == tmp_path / "out" and path.name == "evil.png" and path.read_bytes() == b"data"
    with pytest.raises(vk.ServerError, match="HTTP 404"):
        vk.Client(fake.url).download({"filename": "missing.png", "type": "output"}, tmp_path / "out")


def test_progress_printer_throttles_progress_lines():
    lines = []

    class Sink:
        def write(self, s):
            lines.append(s)

        def flush(self):
            pass

    printer = cli.Printer(Sink())
    for v in range(1, 101):
        printer(vk.ProgressEvent("progress", "p", "s", node="2", class_type="Upscale", value=v, max=100))
    shown = [ln for ln in lines if ln.strip()]
    assert shown[0].startswith("node 2 (Upscale) 1/100") and shown[-1].startswith("node 2 (Upscale) 100/100")
    assert len(shown) < 10


def test_one_validate_inputs_message_for_several_inputs_is_shown_once():
    # ComfyUI gives a node's VALIDATE_INPUTS message to every input that function takes
    errs = [{"type": "custom_validation_failed", "message": "Custom validation failed for node",
             "details": f"{n} - tile_size 5 is too small", "extra_info": {"input_name": n}} for n in ("a", "tile_size")]
    text = vk.format_node_errors({"error": {"message": "Prompt outputs failed validation"},
                                  "node_errors": {"3": {"errors": errs, "class_type": "Up"}}},
                                 {"3": {"class_type": "Up", "_meta": {"title": "Big"}}})
    assert text.splitlines()[1:] == ["  node 3 (Up, 'Big'):",
                                     "    - inputs 'a', 'tile_size': Custom validation failed for node",
                                     "      tile_size 5 is too small"]


def test_a_server_that_accepts_but_never_answers(tmp_path):
    import socket

    with socket.socket() as s:  # listens, never replies
        s.bind(("127.0.0.1", 0))
        s.listen(4)
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
        with pytest.raises(vk.ServerUnreachable, match=r"did not answer POST /prompt within 0.3 s"):
            vk.Client(url, timeout=0.3).queue(graph(), websocket=False)
