"""Which rows, columns and expectations a scoreboard has, read from what scenarios/ holds."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from harness.cell_notes import receiver_info
from harness.expectations import unsafe_reason
from harness.model import CellExpectation, Outcome, SenderProfileBase, Suite
from harness.scenario_files import ScenarioError
from harness.scenarios import LoadedSuite, load_receiver, load_sender, load_suite
from harness.scoreboard.model import BoardReceiver, BoardSender, Family
from lab.spec import CertState, ReceiverSpec

# drivers of real MTAs the lab runs in its own network, and the column group each is shown under
REAL_SOFTWARE = {"postfix": "Postfix", "exim": "Exim"}
# policy models: the reference driver's profiles, and the rfc driver (what the RFCs require)
POLICY_DRIVERS, POLICY_GROUP = ("reference", "rfc"), "policy models"
BOARD_ID = "scoreboard"
# what the runner judges a cell without a stated expectation against; the scoreboard drops that
# judgement (it shows such a cell observed only), so the placeholder never reaches a report
OBSERVE_ONLY = CellExpectation(outcome=Outcome.DELIVERED, tls="any")


def family_of(spec: ReceiverSpec) -> Family:
    """Return a receiver state's family from its id prefix (dane-, sts-) or its facts."""
    if spec.id.startswith("dane-"):
        return Family.DANE
    if spec.id.startswith("sts-"):
        return Family.MTA_STS
    if spec.proxy is not None:
        return Family.DOWNGRADE
    if spec.mx or spec.greylist is not None:
        return Family.MX_RETRY
    if spec.ciphers is not None:
        return Family.CIPHER
    if spec.certificate is not CertState.VALID:
        return Family.CERTIFICATE
    return Family.TLS_VERSION


def software_of(profile: SenderProfileBase) -> str | None:
    """Return the column group of a profile (Postfix, Exim, policy models), None: not on it."""
    if profile.driver in POLICY_DRIVERS:
        return POLICY_GROUP
    return REAL_SOFTWARE.get(profile.driver)


@dataclasses.dataclass(frozen=True)
class Stated:
    """An expectation a suite states for one (receiver, sender) pair."""

    expectation: CellExpectation
    suite: str


@dataclasses.dataclass(frozen=True)
class BoardSuite(LoadedSuite):
    """The scoreboard as a suite the runner can run: stated expectations, else observe only."""

    stated: dict[tuple[str, str], Stated] = dataclasses.field(default_factory=dict)

    def expectation(self, receiver: str, sender: str) -> CellExpectation:
        """Return the stated expectation of a pair, or the observe-only placeholder."""
        found = self.stated.get((receiver, sender))
        return found.expectation if found else OBSERVE_ONLY


@dataclasses.dataclass(frozen=True)
class BoardPlan:
    """The rows (grouped by family), the columns (grouped by software) and their expectations."""

    loaded: BoardSuite
    receivers: tuple[BoardReceiver, ...]
    senders: tuple[BoardSender, ...]
    disputed: dict[tuple[str, str], str]
    selection: str = ""  # the options that chose a subset; empty: the whole board

    @property
    def cells(self) -> list[tuple[str, str]]:
        """Return every (receiver, sender) pair, row-major."""
        return [(r.id, s.id) for r in self.receivers for s in self.senders]


def _ids(text: str | None) -> list[str] | None:
    """Return the ids of a comma-separated option, or None when it is not given."""
    return [w.strip() for w in text.split(",") if w.strip()] if text else None


def _pick(known: list[str], wanted: list[str] | None, folder: Path, option: str) -> list[str]:
    """Return `wanted` (checked against `known`) or all of `known`."""
    if wanted is None:
        return known
    for item in wanted:
        if item not in known:
            raise ScenarioError(
                folder, option, f"'{item}' is not on the scoreboard",
                f"use some of {known}",
            )  # fmt: skip
    return [k for k in known if k in wanted]


def _suite_order(suites: list[Suite]) -> tuple[list[str], list[str]]:
    """Return receiver and sender ids in the order the suites first list them."""
    rows = list(dict.fromkeys(r for s in suites for r in s.receivers))
    cols = list(dict.fromkeys(c for s in suites for c in s.senders))
    return rows, cols


def _stated(
    suites: list[Suite],
) -> tuple[dict[tuple[str, str], Stated], dict[tuple[str, str], str]]:
    """Return the expectations suites state per pair, and the pairs suites disagree on."""
    stated: dict[tuple[str, str], Stated] = {}
    disputed: dict[tuple[str, str], str] = {}
    for suite in suites:
        for receiver, row in suite.cells.items():
            for sender, expectation in row.items():
                key, here = (receiver, sender), Stated(expectation, suite.id)
                first = stated.get(key)
                if first is None:
                    stated[key] = here
                elif (first.expectation.outcome, first.expectation.tls) != (
                    expectation.outcome,
                    expectation.tls,
                ):
                    disputed[key] = f"suites {first.suite} and {suite.id} state different outcomes"
    for key in disputed:
        stated.pop(key, None)
    return stated, disputed


def build_plan(
    root: Path,
    receivers: str | None = None,
    senders: str | None = None,
    families: str | None = None,
) -> BoardPlan:
    """Return the plan: every receiver state x every real-sender profile and policy model."""
    suites = [load_suite(p.stem, root).suite for p in sorted((root / "suites").glob("*.yaml"))]
    row_order, col_order = _suite_order(suites)
    specs = {p.stem: load_receiver(p, root) for p in sorted((root / "receivers").glob("*.yaml"))}
    profiles = {p.stem: load_sender(p, root) for p in sorted((root / "senders").glob("*.yaml"))}
    groups = [*REAL_SOFTWARE.values(), POLICY_GROUP]
    on_board = {i: g for i, p in profiles.items() if (g := software_of(p)) is not None}

    def col_key(item: str) -> tuple[int, int, str]:
        return groups.index(on_board[item]), _rank(col_order, item), item

    def row_key(item: str) -> tuple[int, int, str]:
        return list(Family).index(family_of(specs[item])), _rank(row_order, item), item

    rows = _pick(sorted(specs, key=row_key), _ids(receivers), root / "receivers", "--receivers")
    wanted_families = _ids(families)
    if wanted_families is not None:
        names = [f.value for f in Family]
        for name in wanted_families:
            if name not in names:
                raise ScenarioError(root / "receivers", "--families",
                                    f"unknown family '{name}'", f"use some of {names}")  # fmt: skip
        rows = [r for r in rows if family_of(specs[r]).value in wanted_families]
    cols = _pick(sorted(on_board, key=col_key), _ids(senders), root / "senders", "--senders")
    if not rows or not cols:
        raise ScenarioError(root, "--receivers/--senders/--families", "the selection is empty",
                            "select at least one receiver state and one sender")  # fmt: skip
    stated, disputed = _stated(suites)
    suite = Suite(id=BOARD_ID, title="The scoreboard", receivers=tuple(rows), senders=tuple(cols))
    loaded = BoardSuite(
        suite=suite,
        path=root,
        receivers={r: specs[r] for r in rows},
        senders={c: profiles[c] for c in cols},
        stated={k: v for k, v in stated.items() if k[0] in rows and k[1] in cols},
    )
    board_rows = tuple(
        BoardReceiver(
            id=r,
            family=family_of(specs[r]),
            unsafe=unsafe_reason(specs[r]),
            info=receiver_info(specs[r]),
        )
        for r in rows
    )
    board_cols = tuple(
        BoardSender(
            id=c,
            driver=profiles[c].driver,
            software=on_board[c],
            description=profiles[c].description,
            models=profiles[c].models,
        )
        for c in cols
    )
    chosen = {"--receivers": receivers, "--senders": senders, "--families": families}
    selection = " ".join(f"{k} {v}" for k, v in chosen.items() if v)
    return BoardPlan(loaded, board_rows, board_cols, disputed, selection)


def _rank(order: list[str], item: str) -> int:
    """Return an item's place in `order`, after every listed item when it is not listed."""
    return order.index(item) if item in order else len(order)


__all__ = ["BoardPlan", "BoardSuite", "build_plan", "family_of", "software_of"]
