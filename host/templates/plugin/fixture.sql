-- What `sluice conformance` loads into its scratch SQLite database before
-- the checks: a small table shaped like the data your plugin will meet.
CREATE TABLE customers (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    email TEXT NOT NULL
);
CREATE INDEX customers_email ON customers (email);
INSERT INTO customers (id, name, email) VALUES
    (1, 'Ada Lovelace', 'ada@example.org'),
    (2, 'Grace Hopper', 'grace@navy.example'),
    (3, 'Edsger Dijkstra', 'ewd@example.nl'),
    (4, 'Barbara Liskov', 'liskov@mit.example'),
    (5, 'Ken Thompson', 'ken@bell.example');
