"""``t2l ui``: a Gradio web app to generate an adapter from a description and chat with it.

Type a task description and click *Generate*: the generator turns it into a LoRA
adapter (shown with its id and generation time, downloadable as a zip). Each
message then goes to the base model and to the adapted model side by side; both
replies stream in, from the engine the page was given: with PyTorch computed in the
same batched forward pass (one row without an adapter, one with it), with llama.cpp
one after the other. Recently generated adapters can be switched between, and
example descriptions are one click away. A bare-input example (the task in the
description, only the input in the message, as the README's first example) generates
its adapter and sends its input to both models in one click. Binds 127.0.0.1 unless
told otherwise.
"""

from __future__ import annotations

import os
import queue
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .engine import AdapterLoadError, ServingEngine

__all__ = ["build_app", "launch", "EXAMPLES", "BARE_DESCRIPTION", "BARE_INPUTS"]

EXAMPLES = [
    "Answer grade-school math word problems step by step.",
    "Translate English sentences into French.",
    "Decide whether the statement is true or false and answer yes or no.",
    "Write a short Python function that does what the docstring says.",
    "Classify the sentiment of a product review as positive or negative.",
]
# The bare-input example (the README's first): the description states the task and its labels, each message
# is a review alone, with no instruction in it
BARE_DESCRIPTION = "Classify the sentiment of a movie review as positive or negative."
BARE_INPUTS = ["The plot dragged, but the last twenty minutes were worth the wait.",
               "A warm, funny film; the cast clearly loved every scene."]
NO_ADAPTER = "*No adapter yet: type a task description and click **Generate**.*"


def _text(content: Any) -> str:
    """The text of a Gradio chat message's content (a string or a list of content blocks)."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text") or content.get("content") or "")
    if isinstance(content, (list, tuple)):
        return "".join(_text(c) for c in content)
    return "" if content is None else str(content)


def _history(messages: list[Any] | None) -> list[dict[str, str]]:
    out = []
    for m in messages or []:
        role = m.get("role") if isinstance(m, dict) else getattr(m, "role", None)
        content = m.get("content") if isinstance(m, dict) else getattr(m, "content", None)
        if role in ("user", "assistant"):
            out.append({"role": role, "content": _text(content)})
    return out


class _UIState:
    """Adapter bookkeeping behind the UI: zips for download, labels for the recent list."""

    def __init__(self, engine: ServingEngine):
        self.engine = engine
        self.tmp = Path(tempfile.mkdtemp(prefix="t2l-ui-"))

    def zip_for(self, adapter_id: str) -> str:
        path = self.tmp / f"{adapter_id}.zip"
        if not path.is_file():
            ad, info, _ = self.engine.adapter(adapter_id=adapter_id)
            from ..adapter import VLLM_RANKS

            work = Path(tempfile.mkdtemp(dir=self.tmp))
            ad.save(work / adapter_id, vllm=ad.r in VLLM_RANKS)
            shutil.make_archive(str(path.with_suffix("")), "zip", root_dir=work, base_dir=adapter_id)
            shutil.rmtree(work, ignore_errors=True)
        return str(path)

    def recent(self) -> list[tuple[str, str]]:
        items = list(reversed(self.engine.store.list()))[:20]
        return [(f"{i.description[:70]} ({i.id})", i.id) for i in items]

    def info_md(self, adapter_id: str, hit: bool | None = None) -> str:
        info = self.engine.store.lookup(adapter_id)
        how = "from the cache" if hit else f"generated in **{info.generation_ms:.0f} ms**"
        if hit:
            how += f" (first generated in {info.generation_ms:.0f} ms)"
        return f"**Active adapter** `{info.id}`, {how}  \n**Description:** {info.description}"


def build_app(engine: ServingEngine, max_new_tokens: int = 128) -> Any:
    """The Gradio Blocks app for ``engine`` (not launched): :class:`~.engine.Engine` or
    :class:`~.llama_cpp.LlamaCppEngine`."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    st = _UIState(engine)

    def generate(description: str):
        if not description or not description.strip():
            raise gr.Error("Type a task description first, e.g. 'Answer math word problems step by step.'")
        try:
            _, info, hit = engine.adapter(description)
        except (ValueError, AdapterLoadError) as e:
            raise gr.Error(str(e)) from None
        return (info.id, st.info_md(info.id, hit), gr.update(choices=st.recent(), value=info.id),
                gr.update(value=st.zip_for(info.id), interactive=True))

    def switch(adapter_id: str | None, current: str | None):
        if not adapter_id or adapter_id == current:
            return gr.skip(), gr.skip(), gr.skip()
        return adapter_id, st.info_md(adapter_id, True), gr.update(value=st.zip_for(adapter_id), interactive=True)

    def send(message: str, adapter_id: str | None, base_chat: list | None, ad_chat: list | None
             ) -> Iterator[tuple[Any, Any, str]]:
        if not message or not message.strip():
            raise gr.Error("Type a message first.")
        base_hist = _history(base_chat) + [{"role": "user", "content": message}]
        ad_hist = _history(ad_chat) + [{"role": "user", "content": message}]
        replies = {"base": "", "adapted": ""}
        adapter = engine.adapter(adapter_id=adapter_id)[0] if adapter_id else None
        q: queue.Queue = queue.Queue()
        open_sides = {"base"} if adapter is None else {"base", "adapted"}
        if adapter is None:
            replies["adapted"] = NO_ADAPTER
        # submitted together: with PyTorch both rows run in the same batched forward pass
        reqs = [engine.submit(engine.chat_ids(base_hist), None, lambda ev: q.put(("base", ev)), max_new_tokens)]
        if adapter is not None:
            reqs.append(engine.submit(engine.chat_ids(ad_hist), adapter, lambda ev: q.put(("adapted", ev)),
                                      max_new_tokens))

        def view():
            return (base_hist + [{"role": "assistant", "content": replies["base"]}],
                    ad_hist + [{"role": "assistant", "content": replies["adapted"]}], "")

        try:
            yield view()
            while open_sides:
                side, ev = q.get(timeout=600)
                if ev.kind == "text":
                    replies[side] += ev.text
                elif ev.kind == "error":
                    raise gr.Error(f"generation failed: {ev.error}")
                else:
                    open_sides.discard(side)
                    if not replies[side].strip():
                        replies[side] = "*(empty reply)*"
                yield view()
        finally:
            for r in reqs:
                r.cancelled.set()

    def try_example(description: str, message: str) -> Iterator[tuple[Any, ...]]:
        """A bare-input example in one click: generate its adapter, then a new chat with its input."""
        made = generate(description)
        for chats in send(message, made[0], [], []):
            yield (*made, *chats)

    with gr.Blocks(title="Text-to-LoRA") as app:
        gr.Markdown("# Text-to-LoRA\nDescribe a task; a hypernetwork turns the description into a LoRA adapter "
                    f"for **{engine.base_name}**. Then chat with the base and the adapted model side by side.")
        active = gr.State(None)
        with gr.Row():
            description = gr.Textbox(label="Task description", placeholder=EXAMPLES[0], lines=2, scale=5,
                                     elem_id="description")
            gen_btn = gr.Button("Generate", variant="primary", scale=1, elem_id="generate")
        gr.Examples(examples=[[e] for e in EXAMPLES], inputs=[description], label="Example descriptions")
        info = gr.Markdown(NO_ADAPTER, elem_id="adapter-info")
        with gr.Row():
            recent = gr.Dropdown(choices=[], label="Recent adapters", interactive=True, scale=4, elem_id="recent")
            download = gr.DownloadButton("Download adapter (.zip)", interactive=False, scale=1, elem_id="download")
        with gr.Row():
            base_chat = gr.Chatbot(label=f"Base model ({engine.base_name})", height=360, elem_id="chat-base")
            ad_chat = gr.Chatbot(label="Adapted model", height=360, elem_id="chat-adapted")
        with gr.Row():
            message = gr.Textbox(label="Message", placeholder="Ask something...", scale=5, elem_id="message")
            send_btn = gr.Button("Send", variant="primary", scale=1, elem_id="send")
            clear = gr.Button("Clear chat", scale=1, elem_id="clear")
        gr.Markdown(f"**Bare inputs.** The description states the task: *{BARE_DESCRIPTION}* Each message below is "
                    "a review alone, with no instruction: one click generates the adapter and sends the review to "
                    "both models.", elem_id="bare-intro")
        gr.Examples(examples=[[BARE_DESCRIPTION, m] for m in BARE_INPUTS], inputs=[description, message],
                    outputs=[active, info, recent, download, base_chat, ad_chat, message], fn=try_example,
                    run_on_click=True, cache_examples=False, visible_columns=[1], api_name="bare_example",
                    label="Bare-input examples", elem_id="bare-examples")

        gen_btn.click(generate, [description], [active, info, recent, download])
        description.submit(generate, [description], [active, info, recent, download])
        recent.input(switch, [recent, active], [active, info, download])
        send_btn.click(send, [message, active, base_chat, ad_chat], [base_chat, ad_chat, message])
        message.submit(send, [message, active, base_chat, ad_chat], [base_chat, ad_chat, message])
        clear.click(lambda: ([], []), None, [base_chat, ad_chat])
    return app


def launch(engine: ServingEngine, host: str = "127.0.0.1", port: int = 7860, share: bool = False,
           max_new_tokens: int = 128, block: bool = True) -> Any:
    """Build and launch the app (blocking unless ``block=False``)."""
    app = build_app(engine, max_new_tokens=max_new_tokens)
    app.queue(default_concurrency_limit=8)
    print(f"t2l ui on http://{host}:{port}", flush=True)
    return app.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=not block,
                      ssr_mode=False, quiet=True, footer_links=[])
