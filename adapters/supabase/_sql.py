"""The SQL `outlast supabase setup` prints or applies: triggers that send row changes to the receiver
(through pg_net, after commit) or into an outbox table (in the same transaction).

Everything lives in a private `outlast` schema: the webhook's URL and secret sit in a table no API
role can read (not in the trigger's arguments, which every role can see in the catalog), and the
trigger functions are SECURITY DEFINER with an empty search path, so inserts by any role fire them.
Running the script again replaces the triggers of the tables it names, with the events it names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ._receiver import SECRET_HEADER
from ._routes import event_type, qualified

__all__ = ["OUTBOX_CHANNEL", "SetupPlan", "setup_sql"]

OUTBOX_CHANNEL = "outlast_outbox"

_COMMON = """\
create schema if not exists outlast;
revoke all on schema outlast from public;

-- The event as Supabase database webhooks send it, plus what makes a delivery identifiable:
-- the transaction's timestamp and id, and the table's primary key columns.
create or replace function outlast.event_payload(op text, tbl_schema name, tbl name, rel oid, rec jsonb,
                                                 old_rec jsonb)
returns jsonb language sql stable set search_path = '' as $$
  select jsonb_build_object(
    'type', op, 'schema', tbl_schema, 'table', tbl, 'record', rec, 'old_record', old_rec,
    'commit_timestamp', to_char(now() at time zone 'utc', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
    'transaction_id', pg_current_xact_id()::text,
    'primary_key', (select jsonb_agg(a.attname order by array_position(i.indkey::int2[], a.attnum))
                    from pg_index i join pg_attribute a on a.attrelid = i.indrelid and a.attnum = any(i.indkey)
                    where i.indrelid = rel and i.indisprimary))
$$;
"""

_ROW_PAYLOAD = ("outlast.event_payload(tg_op, tg_table_schema, tg_table_name, tg_relid, "
                "case when tg_op = 'DELETE' then null else to_jsonb(new) end, "
                "case when tg_op = 'INSERT' then null else to_jsonb(old) end)")

_WEBHOOK = f"""\
do $$ begin
  -- pg_net sends the requests after commit; Supabase projects have it, elsewhere it is installed here.
  if to_regprocedure('net.http_post(text,jsonb,jsonb,jsonb,integer)') is null then
    create extension if not exists pg_net;
  end if;
end $$;

create table if not exists outlast.webhooks (
  name text primary key,
  url text not null,
  header text not null,
  secret text not null,
  timeout_ms integer not null default 5000
);
revoke all on outlast.webhooks from public;

create or replace function outlast.send_webhook() returns trigger
language plpgsql security definer set search_path = '' as $$
declare
  hook outlast.webhooks;
begin
  select * into hook from outlast.webhooks where name = tg_argv[0];
  if not found then
    raise warning 'outlast: no webhook % in outlast.webhooks; % on %.% not sent', tg_argv[0], tg_op,
      tg_table_schema, tg_table_name;
    return null;
  end if;
  perform net.http_post(
    url := hook.url,
    body := {_ROW_PAYLOAD},
    headers := jsonb_build_object('Content-Type', 'application/json', hook.header, hook.secret),
    timeout_milliseconds := hook.timeout_ms);
  return null;
end $$;
revoke all on function outlast.send_webhook() from public;
"""

_OUTBOX = f"""\
create table if not exists outlast.outbox (
  id bigint generated always as identity primary key,
  payload jsonb not null,
  created_at timestamptz not null default now(),
  available_at timestamptz not null default now(),
  attempts integer not null default 0,
  last_error text
);
create index if not exists outbox_available on outlast.outbox (available_at, id);
revoke all on outlast.outbox from public;

create or replace function outlast.enqueue_event() returns trigger
language plpgsql security definer set search_path = '' as $$
begin
  insert into outlast.outbox (payload) values ({_ROW_PAYLOAD});
  perform pg_notify('{OUTBOX_CHANNEL}', '');  -- wakes a listening drainer once this transaction commits
  return null;
end $$;
revoke all on function outlast.enqueue_event() from public;
"""


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True)
class SetupPlan:
    """What to set up: tables, events, and the webhook (url + secret), the outbox, or both."""

    tables: Sequence[str]
    events: Sequence[str]
    url: str | None = None
    secret: str | None = None
    outbox: bool = False
    name: str = "default"
    header: str = SECRET_HEADER
    timeout_ms: int = 5000


def setup_sql(plan: SetupPlan) -> str:
    """The whole script, one statement after another; `ValueError` names the option at fault."""
    if not plan.tables:
        raise ValueError("--table: name at least one table (schema.table)")
    tables = [qualified(t) for t in plan.tables]
    events = sorted({event_type(e) for e in plan.events}, key=["INSERT", "UPDATE", "DELETE"].index)
    if not events:
        raise ValueError("--events: name at least one of insert, update, delete")
    if plan.url is None and not plan.outbox:
        raise ValueError("--url: say where the receiver is (or use --outbox)")
    if plan.url is not None:
        if not plan.url.startswith(("http://", "https://")):
            raise ValueError(f"--url must be an http:// or https:// URL, got {plan.url!r}")
        if not plan.secret:
            raise ValueError("--secret-env: the webhook needs a secret")
    when = " or ".join(e.lower() for e in events)
    parts = [_COMMON]
    if plan.url is not None:
        assert plan.secret is not None
        parts.append(_WEBHOOK)
        parts.append(
            "insert into outlast.webhooks (name, url, header, secret, timeout_ms)\n"
            f"values ({literal(plan.name)}, {literal(plan.url)}, {literal(plan.header.lower())}, "
            f"{literal(plan.secret)}, {int(plan.timeout_ms)})\n"
            "on conflict (name) do update set url = excluded.url, header = excluded.header,\n"
            "  secret = excluded.secret, timeout_ms = excluded.timeout_ms;\n")
    if plan.outbox:
        parts.append(_OUTBOX)
    for table in tables:
        schema, name = table.split(".")
        target = f"{ident(schema)}.{ident(name)}"
        if plan.url is not None:
            parts.append(f"drop trigger if exists outlast_webhook on {target};\n"
                         f"create trigger outlast_webhook after {when} on {target}\n"
                         f"  for each row execute function outlast.send_webhook({literal(plan.name)});\n")
        if plan.outbox:
            parts.append(f"drop trigger if exists outlast_outbox on {target};\n"
                         f"create trigger outlast_outbox after {when} on {target}\n"
                         "  for each row execute function outlast.enqueue_event();\n")
    return "\n".join(parts)
