"""Progress reports: every node change, throttled steps, nodes done/total and a percentage."""

from embedded.job import events as ev
from embedded.worker.reporting import ProgressReporter

WF = {"1": {"class_type": "A"}, "2": {"class_type": "KSampler"}, "3": {"class_type": "SaveImage"},
      "4": {"class_type": "B"}}


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_node_changes_always_report_and_steps_are_throttled():
    sent, clock = [], Clock()
    report = ProgressReporter(WF, sent.append, interval=0.25, clock=clock)
    report(ev.CachedEvent("p", ("1",)))
    report(ev.ExecutingEvent("p", "2"))
    for step in range(1, 11):  # ten steps in 0.1 s: the first and the last are sent
        clock.now += 0.01
        report(ev.ProgressEvent("p", "2", step, 10))
    clock.now += 1
    report(ev.ExecutingEvent("p", "3"))
    assert [(s["node_id"], s["step"]) for s in sent] == [("2", None), ("2", 1), ("2", 10), ("3", None)]
    assert sent[0] == {"node_id": "2", "class_type": "KSampler", "step": None, "max_steps": None,
                       "nodes_done": 1, "nodes_total": 4, "percent": 25.0}
    assert sent[1]["percent"] == 27.5  # 1 node done + 1/10 of the sampler, of 4 nodes
    assert sent[3]["nodes_done"] == 2 and sent[3]["percent"] == 50.0


def test_steps_are_sent_again_once_the_interval_has_passed():
    sent, clock = [], Clock()
    report = ProgressReporter(WF, sent.append, interval=0.25, clock=clock)
    report(ev.ExecutingEvent("p", "2"))
    for step in range(1, 5):
        clock.now += 0.3
        report(ev.ProgressEvent("p", "2", step, 100))
    assert [s["step"] for s in sent] == [None, 1, 2, 3, 4]
