"""Drives a Fletch Flight SQL endpoint with real Python clients and prints what they saw
as JSON on stdout (one object), for sql-cli/tests/python_clients.rs to compare with
single-node DataFusion.

Usage: flight_sql_clients.py URL [USER PASSWORD [CA_FILE]]
       (URL like grpc://127.0.0.1:PORT, or grpc+tls://... with CA_FILE)

With USER and PASSWORD every client signs in (ADBC's Basic-to-Bearer handshake,
pyarrow's authenticate_basic_token), and a wrong password is tried first. With CA_FILE
the clients trust that certificate (PEM) for TLS.

Clients: ADBC's Flight SQL driver through the DBAPI (connect, cursor, execute with and
without parameters, fetch_arrow_table, get_objects, get_table_schema) and pyarrow.flight
speaking the Flight SQL protocol by hand (a CommandStatementQuery in GetFlightInfo, then
DoGet of its ticket). Both also read a result served from an executor
(fletch.result_endpoints = 'executors'): ADBC follows the endpoint's location itself,
pyarrow connects to it by hand.
"""
import json
import sys

import adbc_driver_flightsql.dbapi as flight_sql
import pyarrow.flight as flight

DATA = ("SELECT value AS k, value % 7 AS g, 'row ' || CAST(value AS VARCHAR) AS label "
        "FROM generate_series(1, 2000)")
QUERY = "SELECT g, count(*) AS n, sum(k) AS s, max(label) AS top FROM t GROUP BY g"
PARAMETERIZED = "SELECT k, label FROM t WHERE k > $1 AND g = 3"
# The DB-API's qmark style, the one JDBC also uses.
QMARK = "SELECT k, label FROM t WHERE k > ? AND g = ?"


def rows(table):
    """Each row as 'v1|v2|...', sorted (queries without ORDER BY)."""
    columns = [column.to_pylist() for column in table.columns]
    return sorted("|".join(str(value) for value in row) for row in zip(*columns))


def protobuf_string_field(number, text):
    """One length-delimited protobuf field (wire type 2)."""
    data = text.encode() if isinstance(text, str) else text
    key = bytes([(number << 3) | 2])
    length = len(data)
    varint = bytearray()
    while True:
        byte = length & 0x7F
        length >>= 7
        varint.append(byte | (0x80 if length else 0))
        if not length:
            break
    return key + bytes(varint) + data


def statement_query_command(sql):
    """A google.protobuf.Any holding arrow.flight.protocol.sql.CommandStatementQuery."""
    command = protobuf_string_field(1, sql)
    type_url = "type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery"
    return protobuf_string_field(1, type_url) + protobuf_string_field(2, command)


def main():
    url = sys.argv[1]
    user, password = (sys.argv[2], sys.argv[3]) if len(sys.argv) > 3 else (None, None)
    ca = open(sys.argv[4], "rb").read() if len(sys.argv) > 4 else None
    seen = {}
    tls = {"adbc.flight.sql.client_option.tls_root_certs": ca.decode()} if ca else {}
    db_kwargs = dict(tls, **({"username": user, "password": password} if user else {}))
    if user:
        try:
            wrong = dict(tls, username=user, password="wrong")
            with flight_sql.connect(url, db_kwargs=wrong) as c:
                with c.cursor() as cursor:
                    cursor.execute("SELECT 1")
                    cursor.fetch_arrow_table()
            seen["adbc_wrong_password"] = "no error"
        except Exception as error:
            seen["adbc_wrong_password"] = str(error)
    with flight_sql.connect(url, db_kwargs=db_kwargs) as connection:
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE TABLE t PARTITION BY HASH (k) INTO 4 FRAGMENTS AS {DATA}")
            cursor.execute(QUERY)
            seen["adbc_query"] = rows(cursor.fetch_arrow_table())
            cursor.execute(PARAMETERIZED, parameters=(1990,))
            seen["adbc_parameters_1990"] = rows(cursor.fetch_arrow_table())
            cursor.execute(PARAMETERIZED, parameters=(10,))
            seen["adbc_parameters_10"] = rows(cursor.fetch_arrow_table())
            cursor.execute(QMARK, parameters=(1990, 3))
            seen["adbc_qmark_1990"] = rows(cursor.fetch_arrow_table())
            cursor.execute(QMARK, parameters=(10, 3))
            seen["adbc_qmark_10"] = rows(cursor.fetch_arrow_table())
            # Strings arrive as plain utf8 unless the session asks for views.
            cursor.execute(QUERY)
            seen["adbc_types_default"] = [str(f.type) for f in cursor.fetch_arrow_table().schema]
            cursor.execute("SET fletch.client_string_type = 'view'")
            cursor.execute(QUERY)
            seen["adbc_types_view"] = [str(f.type) for f in cursor.fetch_arrow_table().schema]
            cursor.execute("RESET fletch.client_string_type")
            cursor.execute("SET fletch.result_endpoints = 'executors'")
            cursor.execute(QUERY)
            seen["adbc_from_executor"] = rows(cursor.fetch_arrow_table())
            cursor.execute("SET fletch.result_endpoints = 'coordinator'")
            try:
                cursor.execute("SELEC nonsense")
                seen["adbc_bad_sql"] = "no error"
            except Exception as error:  # the driver's own error type
                seen["adbc_bad_sql"] = str(error)
        objects = connection.adbc_get_objects(depth="all", table_name_filter="t").read_all()
        tables = []
        for catalog in objects.to_pylist():
            for schema in catalog["catalog_db_schemas"] or []:
                for table in schema["db_schema_tables"] or []:
                    columns = [c["column_name"] for c in table["table_columns"] or []]
                    tables.append([catalog["catalog_name"], schema["db_schema_name"],
                                   table["table_name"], columns])
        seen["get_objects"] = tables
        seen["table_schema"] = connection.adbc_get_table_schema("t").names

    client = flight.FlightClient(url, tls_root_certs=ca)
    options = flight.FlightCallOptions()
    if user:
        header = client.authenticate_basic_token(user, password)
        options = flight.FlightCallOptions(headers=[header])

    def statement(sql):
        descriptor = flight.FlightDescriptor.for_command(statement_query_command(sql))
        return client.get_flight_info(descriptor, options)

    info = statement(QUERY)
    table = client.do_get(info.endpoints[0].ticket, options).read_all()
    seen["pyarrow_flight_query"] = rows(table)

    # The session's results now come from the executor the endpoint names first.
    client.do_get(statement("SET fletch.result_endpoints = 'executors'").endpoints[0].ticket,
                  options).read_all()
    endpoint = statement(QUERY).endpoints[0]
    locations = [getattr(location.uri, "decode", lambda: location.uri)() for location in endpoint.locations]
    seen["pyarrow_flight_locations"] = locations
    executor = flight.FlightClient(locations[0], tls_root_certs=ca)
    seen["pyarrow_flight_from_executor"] = rows(executor.do_get(endpoint.ticket, options).read_all())
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
