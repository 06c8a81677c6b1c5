"""What a screen is answered: the visitor at its device or in its zone, the site's figures
today and the venue's, and a gate screen's figures, over the calling thread's `Reader` (see
`edge_agent.app.screens`, `edge_agent.app.venue` and `edge_agent.app.gates`)."""

from __future__ import annotations

from collections.abc import Callable

from edge_agent.app import gates, screens, venue
from edge_agent.config import SiteSettings, VenueSettings
from edge_agent.core.catalogue import names_of
from edge_agent.serving.recommend import Stocked
from edge_agent.store.screens import Screen
from edge_agent.web.cached import Cached, Versioned
from edge_agent.web.readers import Readers


class ScreenAnswers:
    """The screens' answers of one app, sharing what is in stock and the site's figures."""

    def __init__(
        self,
        readers: Readers,
        clock: Callable[[], int],
        k: int,
        site_refresh_s: float,
        site: SiteSettings | None = None,
        venue_settings: VenueSettings | None = None,
    ) -> None:
        """``k``: the insights' suppression threshold; ``site_refresh_s``: the site's figures
        are computed at most this often, whatever the number of screens; ``site``: its
        currency, exchange rates, locale and time zone (how the screens write money, numbers
        and times, sent with the figures); ``venue_settings``: how the venue's agents share
        (the venue's figures are computed at most every ``share_every_s``, when it changes)."""
        self.readers = readers
        self.clock = clock
        self.k = k
        self.stocked = Stocked()
        self.figures = Cached(site_refresh_s)
        self.venue_settings = venue_settings or VenueSettings()
        self.venue_figures = Cached(self.venue_settings.share_every_s)
        # Computed again on every ticket scan stored (a surge must show within seconds), and
        # as often as peers share, for their news.
        self.gate_figures = Versioned(self.venue_settings.share_every_s)
        self.catalogue = Cached(site_refresh_s)
        self.site_settings = site or SiteSettings()
        self.writing = {
            "currency": self.site_settings.currency,
            "locale": self.site_settings.locale,
            "timezone": self.site_settings.timezone,
        }

    def named(self) -> tuple[dict[str, str], dict[str, str]]:
        """The items in stock now (item -> the tills' name): what the tills sold lately,
        less what the catalogue says is not on sale; and the catalogue's names.

        Raises:
            StorageError: the database cannot be read.
        """
        store = self.readers.get().store
        names, unavailable = self.catalogue.get(
            lambda: (store.catalogue.names(), store.catalogue.unavailable())
        )
        sold = self.stocked.get(store, self.clock())
        return {i: n for i, n in sold.items() if i not in unavailable}, names

    def _names(self) -> dict[str, str]:
        stocked, catalogue = self.named()
        return names_of(catalogue, stocked)

    def visitor(self, screen: Screen, k: int) -> dict[str, object]:
        """The visitor in front of ``screen`` and up to ``k`` picks per list.

        Raises:
            StorageError: the database or a serving model cannot be read.
        """
        reader = self.readers.get()
        stocked, names = self.named()
        return screens.visitor(reader.recommender, screen, k, stocked, names, self.clock())

    def site(self) -> dict[str, object]:
        """The site's figures today.

        Raises:
            StorageError: the database cannot be read.
        """
        figures = self.figures.get(
            lambda: screens.site_today(
                self.readers.get().store,
                self.k,
                self._names(),
                self.clock(),
                self.site_settings.timezone,
                self.site_settings.money,
            )
        )
        return {**figures, **self.writing}

    def venue(self) -> dict[str, object]:
        """The venue's figures today, from this agent's cells and its peers'.

        Raises:
            StorageError: the database cannot be read.
        """
        figures = self.venue_figures.get(
            lambda: venue.venue_today(
                self.readers.get().store,
                self.site_settings,
                self.venue_settings,
                self.k,
                self.clock(),
            )
        )
        return {**figures, **self.writing}

    def gates(self, version: tuple[int, int]) -> dict[str, object]:
        """A gate screen's figures: the venue's when this agent shares, else its own;
        computed again when asked for with a newer ``version`` of the gates' news
        (`edge_agent.web.changes.GATES`), or when the last answer is older than
        ``share_every_s``.

        Raises:
            StorageError: the database cannot be read.
        """
        figures = self.gate_figures.get(
            version,
            lambda: gates.gates_today(
                self.readers.get().store,
                self.site_settings,
                self.venue_settings,
                self.k,
                self.clock(),
            ),
        )
        return {**figures, **self.writing}
