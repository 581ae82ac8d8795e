"""The CLI's job progress display: a finished stage shows its full token count even when the last
poll saw it part-way (progress writes are rate-limited, so the final one is often missed)."""

from rich.console import Console

from service.cli.render import JobProgress


def test_finished_stage_shows_its_total_tokens() -> None:
    console = Console(record=True, width=120, force_terminal=False)
    with JobProgress(console=console) as bar:
        bar.update({"status": "running", "stage": "collect_factors",
                    "progress": {"fraction": 0.5, "tokens_done": 100, "tokens_total": 200}})
        bar.update({"status": "running", "stage": "evaluate", "progress": {"fraction": 0.1}})
        bar.update({"status": "succeeded", "stage": "export", "progress": {"fraction": 1.0}})
    text = console.export_text()
    assert "200/200 tok" in text
    assert "100/200 tok" not in text.split("collect_factors")[-1].splitlines()[0]
