"""Drives the nnrun Jupyter kernel through a real session with jupyter_client: state across cells, a result,
print output, an error with the user's traceback, an interrupt of a running loop (and the kernel going on), an
inline PNG from nnr.plot.image_grid. Usage: python drive.py KERNEL_NAME (JUPYTER_PATH names the spec's folder)"""
import base64
import sys
import time

from jupyter_client.manager import start_new_kernel

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


def run(kc, code, timeout=60):
    """execute code; returns (reply content, [iopub messages of this request])"""
    msg_id = kc.execute(code)
    msgs = []
    while True:
        m = kc.get_iopub_msg(timeout=timeout)
        if m["parent_header"].get("msg_id") != msg_id:
            continue
        msgs.append(m)
        if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
            break
    reply = kc.get_shell_msg(timeout=timeout)
    return reply["content"], msgs


def of(msgs, kind):
    return [m["content"] for m in msgs if m["msg_type"] == kind]


def main():
    km, kc = start_new_kernel(kernel_name=sys.argv[1], startup_timeout=60)
    try:
        info = kc.kernel_info(reply=True)["content"] if False else None
        r, m = run(kc, "x = nnr.ones(2, 3) * 2")
        check(r["status"] == "ok", f"assignment: {r}")
        r, m = run(kc, "x:sum():item()")
        res = of(m, "execute_result")
        check(r["status"] == "ok" and res and res[0]["data"]["text/plain"] == "12", f"state kept, result shown: {res}")
        r, m = run(kc, "print('hello', 42) io.write('a', 1, '\\n') local y = 5")
        text = "".join(s["text"] for s in of(m, "stream") if s["name"] == "stdout")
        check(text == "hello\t42\na1\n", f"print output {text!r}")
        r, m = run(kc, "local function build()\n  return nnr.nn.Linear(784, 10)(nnr.randn(4, 5))\nend\nlocal z = build()")
        errs = of(m, "error")
        tb = "\n".join(errs[0]["traceback"]) if errs else ""
        check(r["status"] == "error" and errs and "input of shape [4, 5], expected [..., 784]" in errs[0]["evalue"], f"error: {errs}")
        check("In [" in tb and "share/lua/5.1/nnr/" not in tb, f"the user's traceback only: {tb}")
        r, m = run(kc, "x:size(2)")
        check(of(m, "execute_result") and of(m, "execute_result")[0]["data"]["text/plain"] == "3", "the kernel goes on after an error")
        # interrupt a running loop: it stops, the state survives
        msg_id = kc.execute("n = 0 while true do n = n + 1; nnr.randn(64, 64):sum() end")
        time.sleep(2)
        t0 = time.time()
        km.interrupt_kernel()
        reply = kc.get_shell_msg(timeout=30)["content"]
        check(reply["status"] == "error" and "nterrupt" in reply.get("ename", "") + reply.get("evalue", ""), f"interrupt: {reply}")
        check(time.time() - t0 < 10, "interrupt took too long")
        r, m = run(kc, "n > 0 and x:sum():item()")
        res = of(m, "execute_result")
        check(res and res[0]["data"]["text/plain"] == "12", f"state after the interrupt: {res}")
        # inline pictures
        r, m = run(kc, "g = nnr.plot.image_grid(nnr.rand(6, 1, 8, 8), nil, {nrow = 3})")
        disp = of(m, "display_data")
        png = base64.b64decode(disp[0]["data"]["image/png"]) if disp else b""
        check(png[:8] == b"\x89PNG\r\n\x1a\n", "an inline PNG of the image grid")
        check(len(png) > 100, "the PNG has content")
        r, m = run(kc, "nnr.jupyter.display(nnr.rand(3, 10, 12))")
        check(of(m, "display_data"), "nnr.jupyter.display of a tensor")
        r, m = run(kc, "this is not lua")
        check(r["status"] == "error" and of(m, "error") and "In [" in of(m, "error")[0]["evalue"], f"syntax error: {of(m, 'error')}")
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    n = 14
    print(f"{n - len(failures)} passed, {len(failures)} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
