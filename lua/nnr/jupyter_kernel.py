"""The Jupyter kernel of nnrun: a wrapper on pip's ipykernel that runs `nnrun --kernel-server` (lua/nnr/jupyter.lua)
and hands it each cell. `nnrun --install-kernel` copies this file into the kernel spec's folder; kernel.json names
the nnrun to run (env NNRUN).

The server answers on a pipe of its own (NNR_KERNEL_FD), one JSON object a line: stream (print, io.write), display
(image/png, image/svg+xml), result (the value of an expression cell), error (the user's traceback), done. Output
written to the process's stdout and stderr by other means (C code, io.stdout:write) is forwarded as it comes.
An interrupt (interrupt_mode "message", or SIGINT to this process) sends SIGINT to nnrun, which stops the cell.
If nnrun dies, the next cell starts a new one and says so."""
import json
import os
import signal
import subprocess
import threading

from ipykernel.kernelapp import IPKernelApp
from ipykernel.kernelbase import Kernel


class NnrunKernel(Kernel):
    implementation = "nnrun"
    implementation_version = "0.1"
    language_info = {"name": "lua", "mimetype": "text/x-lua", "file_extension": ".lua", "codemirror_mode": "lua",
                     "pygments_lexer": "lua"}
    banner = "nnrun: LuaJIT with nnr (the global nnr is loaded; a cell's locals end with it)"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.proc = None
        self._start()

    def _forward(self, pipe, name):
        while True:
            data = os.read(pipe.fileno(), 65536)
            if not data:
                return
            self.send_response(self.iopub_socket, "stream", {"name": name, "text": data.decode("utf-8", "replace")})

    def _start(self):
        r, w = os.pipe()
        env = dict(os.environ, NNR_KERNEL_FD=str(w))
        exe = os.environ.get("NNRUN", "nnrun")
        self.proc = subprocess.Popen([exe, "--kernel-server"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, pass_fds=(w,), env=env, start_new_session=True)
        os.close(w)
        self.ctl = os.fdopen(r, "r", encoding="utf-8", errors="replace")
        for pipe, name in ((self.proc.stdout, "stdout"), (self.proc.stderr, "stderr")):
            threading.Thread(target=self._forward, args=(pipe, name), daemon=True).start()
        first = self.ctl.readline()
        if not first or json.loads(first).get("kind") != "ready":
            raise RuntimeError(f"{exe} --kernel-server did not start (exit status {self.proc.poll()})")

    def _interrupt_child(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)

    async def interrupt_request(self, stream, ident, parent):
        """interrupt_mode "message": the control channel's interrupt reaches nnrun as SIGINT"""
        self._interrupt_child()
        self.session.send(stream, "interrupt_reply", {"status": "ok"}, parent, ident=ident)

    def do_execute(self, code, silent, store_history=True, user_expressions=None, allow_stdin=False, *, cell_meta=None,
                   cell_id=None):
        if self.proc.poll() is not None:
            status = self.proc.returncode
            self._start()
            self.send_response(self.iopub_socket, "stream",
                               {"name": "stderr", "text": f"nnrun had exited (status {status}); a new one runs this cell\n"})
        request = json.dumps({"code": code, "n": self.execution_count}) + "\n"
        self.proc.stdin.write(request.encode("utf-8"))
        self.proc.stdin.flush()
        error = None
        while True:
            try:
                line = self.ctl.readline()
            except KeyboardInterrupt:        # interrupt_mode "signal": SIGINT came to this process
                self._interrupt_child()
                continue
            if not line:
                error = {"ename": "KernelDied", "evalue": f"nnrun exited (status {self.proc.wait()})", "traceback": []}
                if not silent:
                    self.send_response(self.iopub_socket, "error", error)
                break
            msg = json.loads(line)
            kind = msg.get("kind")
            if kind == "done":
                break
            if silent:
                continue
            if kind == "stream":
                self.send_response(self.iopub_socket, "stream", {"name": msg["name"], "text": msg["text"]})
            elif kind == "display":
                self.send_response(self.iopub_socket, "display_data", {"data": msg["data"], "metadata": {}})
            elif kind == "result":
                self.send_response(self.iopub_socket, "execute_result",
                                   {"execution_count": self.execution_count, "data": {"text/plain": msg["text"]}, "metadata": {}})
            elif kind == "error":
                error = {"ename": msg["ename"], "evalue": msg["evalue"], "traceback": msg["traceback"]}
                self.send_response(self.iopub_socket, "error", error)
        if error:
            return {"status": "error", "execution_count": self.execution_count, **error}
        return {"status": "ok", "execution_count": self.execution_count, "payload": [], "user_expressions": {}}

    def do_shutdown(self, restart):
        if self.proc and self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return {"status": "ok", "restart": restart}


if __name__ == "__main__":
    IPKernelApp.launch_instance(kernel_class=NnrunKernel)
