"""Score a preregistered forecast against the run it forecast.

FORECAST is the JSON of `scaling recommend ... --json` (or `scaling predict ... --json`),
saved before the run was trained. SRC is the finished run: a run directory (its
result.json's eval_loss) or a CSV row (`CSV:ROW`, ROW counted from 1, or `CSV:NAME` for a
row whose `run` column is NAME). Prints the error and whether the observed loss fell inside
the forecast's intervals, and writes the record beside the run (RUN_DIR/forecast_check.json,
or <csv stem>.<row>.forecast_check.json). The prediction interval is the forecast's own
`loss_pi`; a recommend forecast has none, so it is computed from the fit the forecast names.
A run dir must belong to the sweep the forecast's fit was made from.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("forecast", metavar="FORECAST", help="saved forecast JSON")
    parser.add_argument("src", metavar="SRC", help="finished run dir, or CSV:ROW / CSV:NAME")
    parser.add_argument("--json", action="store_true", help="print the record as JSON")


def run(args: argparse.Namespace) -> int:
    from analysis.prereg import check_forecast, observed_run, read_forecast
    from scaling.fileio import atomic_write_json, to_json

    forecast = read_forecast(args.forecast)
    observed = observed_run(args.src)
    record = check_forecast(forecast, observed)
    atomic_write_json(observed.record_path, record)
    if args.json:
        print(to_json(record))
        return 0
    pi = record["loss_pi"]
    print(f"forecast {record['forecast_loss']:.4f}, observed {record['observed_loss']:.4f} "
          f"({record['error']:+.2%}); {record['level']:.0%} PI [{pi[0]:.4f}, {pi[1]:.4f}]: "
          f"{'inside' if record['inside_pi'] else 'OUTSIDE'}")
    print(f"wrote {observed.record_path}")
    return 0
