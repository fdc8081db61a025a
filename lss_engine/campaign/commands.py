"""``lss campaign init|run|resume|status|report``: parse, call :mod:`.driver` and :mod:`.report`, print."""
from __future__ import annotations

import argparse

__all__ = ["add_parser", "cmd_campaign"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``campaign`` and its subcommands to the ``lss`` parser."""
    camp = sub.add_parser("campaign", help="adaptive sampling campaigns: MD walkers on Dask, retrain, restart "
                                           "from under-sampled latent regions",
                          description="Adaptive sampling: rounds of OpenMM walkers (on a Dask cluster), an encoder "
                                      "retrained on all data, walkers restarted from frames a ranker picks. The "
                                      "campaign directory is the record; resume continues after any crash.")
    csub = camp.add_subparsers(dest="campaign_command", metavar="ACTION", parser_class=type(camp))
    csub.required = True
    init = csub.add_parser("init", help="create a campaign directory from a campaign.toml")
    init.add_argument("dir")
    init.add_argument("--config", required=True, help="campaign.toml (see docs/campaign.md)")
    for name, text in (("run", "run the campaign until a stopping rule holds"),
                       ("resume", "continue a campaign after an interruption or crash")):
        p = csub.add_parser(name, help=text)
        p.add_argument("dir")
        p.add_argument("--scheduler", help="address of a running Dask scheduler to use instead of [cluster]")
        p.add_argument("--rounds", type=int, help="run at most this many rounds now")
        p.add_argument("--no-progress", action="store_true")
    st = csub.add_parser("status", help="a table of rounds, walkers, MD spent, discovery, VAMP-2, timescales")
    st.add_argument("dir")
    rep = csub.add_parser("report", help="PNGs (coverage, discovery, timescales) and metrics.json")
    rep.add_argument("dir")
    rep.add_argument("--out", help="output folder (default DIR/report)")
    rep.add_argument("--boot", type=int, default=20,
                     help="bootstrap samples of the estimate's errors (default 20; with explorers one TRAM fit each)")


def cmd_campaign(args: argparse.Namespace) -> int:
    from ..errors import LssError
    from .driver import Campaign, init_campaign
    from .report import status_table, write_report

    action = args.campaign_command
    if action == "init":
        path = init_campaign(args.dir, args.config)
        print(f"lss campaign: created {path}; start it with: lss campaign run {path}")
        return 0
    campaign = Campaign(args.dir)
    if action in ("run", "resume"):
        if args.rounds is not None and args.rounds < 1:
            raise LssError("--rounds must be positive")
        campaign.run(scheduler=args.scheduler, max_rounds=args.rounds, progress=not args.no_progress)
        print(status_table(campaign))
        return 0
    if action == "status":
        print(status_table(campaign))
        return 0
    if args.boot < 0:
        raise LssError("--boot must be 0 or more")
    metrics = write_report(campaign, args.out, n_boot=args.boot)
    out = args.out or campaign.dir / "report"
    print(f"lss campaign report: {', '.join(metrics['figures'])} and metrics.json in {out}")
    return 0
