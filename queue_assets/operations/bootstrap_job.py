"""`queue-assets init` as a Dagster job, for people who work from the UI."""

import dagster as dg

from ..bootstrap import bootstrap
from ..resources import SharedQueueResource


@dg.op(description="Install pgmq if missing, create the queues and apply the hub's migrations (idempotent).")
def bootstrap_shared_queue(context: dg.OpExecutionContext, shared_queue: SharedQueueResource) -> None:
    report = bootstrap(shared_queue.url)
    context.log.info(report.summary())
    context.add_output_metadata(
        {
            "pgmq_version": dg.MetadataValue.text(report.pgmq_version),
            "pgmq_method": dg.MetadataValue.text(report.pgmq_method),
            "changes": dg.MetadataValue.int(len(report.actions)),
            "actions": dg.MetadataValue.md("\n".join(f"- {a}" for a in report.actions) or "_nothing to do_"),
        }
    )


@dg.job(
    description="Bootstrap the shared_queue database: pgmq, queues, hub schema. Same as `queue-assets init`."
)
def bootstrap_job():
    bootstrap_shared_queue()
