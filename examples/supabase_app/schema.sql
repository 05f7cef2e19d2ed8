-- The tables of the example (run it in the Supabase SQL editor, or psql), then:
--   export OUTLAST_SUPABASE_SECRET=$(openssl rand -hex 32)
--   outlast supabase setup --table public.orders --events insert,update --url https://<receiver>/supabase --apply "$DATABASE_URL"
--   outlast supabase setup --table public.customers --events delete --url https://<receiver>/supabase --apply "$DATABASE_URL"
create table if not exists public.orders (
  id bigint generated always as identity primary key,
  email text not null,
  status text not null default 'pending'
);
create table if not exists public.customers (
  id bigint generated always as identity primary key,
  name text not null
);
create table if not exists public.newsletter (
  customer_id bigint primary key references public.customers on delete cascade
);
