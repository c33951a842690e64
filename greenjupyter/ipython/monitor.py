"""``%carbon monitor``: live power and session totals as an ipywidget, for frontends without the sidebar.

The widget is updated from the sampler thread (ipywidgets sends state changes from any thread);
its text is set with widgets' ``value`` on Label-like widgets, so nothing from the kernel is
rendered as HTML.
"""

from __future__ import annotations

from .. import format as fmt
from ..errors import GreenJupyterError

HISTORY = 240  # samples kept on the sparkline: a minute at the default rate


class Monitor:
    """One widget box: total watts now, per component, and this session's energy and CO2e."""

    def __init__(self, recorder):
        try:
            import ipywidgets as widgets
        except ImportError:
            raise GreenJupyterError("%carbon monitor needs ipywidgets: pip install ipywidgets") from None
        self._recorder = recorder
        self.now = widgets.Label(value="waiting for the first sample…")
        self.parts = widgets.Label(value="")
        self.session = widgets.Label(value="")
        self.widget = widgets.VBox([self.now, self.parts, self.session])
        self.watts: list[float] = []

    def start(self) -> None:
        self._recorder.meter.sampler.listeners.append(self.on_sample)

    def stop(self) -> None:
        listeners = self._recorder.meter.sampler.listeners
        if self.on_sample in listeners:
            listeners.remove(self.on_sample)

    def on_sample(self, sample) -> None:
        self.watts = (self.watts + [sample.total_w])[-HISTORY:]
        state = "cell running" if self._recorder.busy else "idle"
        self.now.value = f"⚡ {fmt.power(sample.total_w)} now ({state}) · peak in the last minute {fmt.power(max(self.watts))}"
        self.parts.value = " · ".join(
            f"{name} {fmt.power(w)}" for name, w in zip(sample.components, sample.watts) if w == w
        )
        totals = self._recorder._totals
        self.session.value = (
            f"session: {totals.cells} cells, {fmt.energy(totals.energy_j)}, {fmt.co2e(totals.co2e_g)} CO2e"
        )
