"""Builds the demo project: a small bicycle retailer (bikeshop.sqlite) and a stream of questions with the SQL a
careful analyst would write (questions.jsonl), used by the demo's simulated users to judge answers.

Deterministic (seeded), so the shipped files can be rebuilt byte for byte: ``python samples/bikeshop/build.py``.
"""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path

HERE = Path(__file__).parent
CITIES = ["Lyon", "Porto", "Ghent", "Bremen", "Malmo", "Turin"]
CATEGORIES = {
    "road": ["Aero 9", "Sprint SL", "Col Climber", "Gran Fondo"],
    "mountain": ["Ridge 29", "Trail Fox", "Rock Hopper X"],
    "city": ["Commuter 3", "Canal Cruiser", "Metro Step"],
    "kids": ["Pip 16", "Pip 20"],
    "accessories": ["Helmet Pro", "Lock Max", "Lamp Duo", "Bottle Cage"],
}
FIRST = [
    "Ana",
    "Ben",
    "Chloe",
    "David",
    "Eva",
    "Farid",
    "Greta",
    "Hugo",
    "Ines",
    "Jon",
    "Kaja",
    "Luis",
    "Mila",
    "Nils",
]
LAST = ["Moreau", "Silva", "Peeters", "Becker", "Lind", "Rossi", "Costa", "Novak"]


def build_database(path: Path) -> None:
    rng = random.Random(7)
    path.unlink(missing_ok=True)
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE stores (store_id INTEGER PRIMARY KEY, name TEXT NOT NULL, city TEXT NOT NULL, opened_year INTEGER);
        CREATE TABLE customers (customer_id INTEGER PRIMARY KEY, first_name TEXT, last_name TEXT, city TEXT,
                                joined_date TEXT, loyalty_tier TEXT);
        CREATE TABLE products (product_id INTEGER PRIMARY KEY, name TEXT NOT NULL, category TEXT NOT NULL,
                               list_price REAL NOT NULL);
        CREATE TABLE orders (order_id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customers(customer_id),
                             store_id INTEGER REFERENCES stores(store_id), order_date TEXT NOT NULL, status TEXT NOT NULL);
        CREATE TABLE order_items (order_id INTEGER REFERENCES orders(order_id),
                                  product_id INTEGER REFERENCES products(product_id),
                                  quantity INTEGER NOT NULL, unit_price REAL NOT NULL,
                                  PRIMARY KEY (order_id, product_id));
        """
    )
    for i, city in enumerate(CITIES, 1):
        db.execute("INSERT INTO stores VALUES (?,?,?,?)", (i, f"{city} Cycles", city, 2012 + i))
    pid = 0
    for category, names in CATEGORIES.items():
        for name in names:
            pid += 1
            base = {"road": 2400, "mountain": 1900, "city": 800, "kids": 300, "accessories": 40}[category]
            db.execute(
                "INSERT INTO products VALUES (?,?,?,?)",
                (pid, name, category, round(base * rng.uniform(0.7, 1.6), 2)),
            )
    for cid in range(1, 121):
        db.execute(
            "INSERT INTO customers VALUES (?,?,?,?,?,?)",
            (
                cid,
                rng.choice(FIRST),
                rng.choice(LAST),
                rng.choice(CITIES),
                f"{rng.randint(2019, 2024)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                rng.choice(["bronze", "bronze", "silver", "gold"]),
            ),
        )
    for oid in range(1, 601):
        year = rng.choice([2023, 2024, 2024, 2025])
        db.execute(
            "INSERT INTO orders VALUES (?,?,?,?,?)",
            (
                oid,
                rng.randint(1, 120),
                rng.randint(1, len(CITIES)),
                f"{year}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                rng.choice(["completed"] * 8 + ["returned", "cancelled"]),
            ),
        )
        for product_id in rng.sample(range(1, pid + 1), rng.randint(1, 3)):
            price = db.execute(
                "SELECT list_price FROM products WHERE product_id = ?", (product_id,)
            ).fetchone()[0]
            db.execute(
                "INSERT INTO order_items VALUES (?,?,?,?)",
                (oid, product_id, rng.randint(1, 3), round(price * rng.choice([1, 1, 0.9, 0.85]), 2)),
            )
    db.commit()
    db.close()


# (question template, SQL template, values): each pattern recurs with other values, as real users ask.
TEMPLATES: list[tuple[str, str, list[dict[str, str]]]] = [
    (
        "how many orders did the {city} store take in {year}",
        "SELECT COUNT(*) FROM orders JOIN stores ON stores.store_id = orders.store_id"
        " WHERE stores.city = '{city}' AND orders.order_date LIKE '{year}-%'",
        [
            {"city": c, "year": y}
            for c, y in [
                ("Lyon", "2024"),
                ("Porto", "2023"),
                ("Ghent", "2025"),
                ("Turin", "2024"),
                ("Bremen", "2024"),
                ("Malmo", "2023"),
            ]
        ],
    ),
    (
        "what was the revenue of completed orders in {year}",
        "SELECT SUM(order_items.quantity * order_items.unit_price) FROM order_items"
        " JOIN orders ON orders.order_id = order_items.order_id"
        " WHERE orders.status = 'completed' AND orders.order_date LIKE '{year}-%'",
        [{"year": y} for y in ["2024", "2023", "2025"]],
    ),
    (
        "top {n} products by units sold",
        "SELECT products.name, SUM(order_items.quantity) AS units FROM order_items"
        " JOIN products ON products.product_id = order_items.product_id"
        " GROUP BY products.name ORDER BY units DESC LIMIT {n}",
        [{"n": n} for n in ["3", "5", "4"]],
    ),
    (
        "how many {tier} customers live in {city}",
        "SELECT COUNT(*) FROM customers WHERE loyalty_tier = '{tier}' AND city = '{city}'",
        [
            {"tier": t, "city": c}
            for t, c in [
                ("gold", "Porto"),
                ("silver", "Lyon"),
                ("bronze", "Ghent"),
                ("gold", "Bremen"),
                ("silver", "Turin"),
            ]
        ],
    ),
    (
        "number of orders per status",
        "SELECT status, COUNT(*) FROM orders GROUP BY status",
        [{}],
    ),
    (
        "which {category} products cost more than {price}",
        "SELECT name FROM products WHERE category = '{category}' AND list_price > {price}",
        [
            {"category": c, "price": p}
            for c, p in [("road", "3000"), ("mountain", "2000"), ("city", "900"), ("road", "2500")]
        ],
    ),
    (
        "revenue per store city in {year}",
        "SELECT stores.city, SUM(order_items.quantity * order_items.unit_price) AS revenue FROM orders"
        " JOIN stores ON stores.store_id = orders.store_id JOIN order_items ON order_items.order_id = orders.order_id"
        " WHERE orders.order_date LIKE '{year}-%' GROUP BY stores.city",
        [{"year": y} for y in ["2024", "2023", "2025"]],
    ),
    (
        "how many orders were {status}",
        "SELECT COUNT(*) FROM orders WHERE status = '{status}'",
        [{"status": s} for s in ["returned", "cancelled", "completed"]],
    ),
    (
        "average list price of {category} products",
        "SELECT AVG(list_price) FROM products WHERE category = '{category}'",
        [{"category": c} for c in ["road", "kids", "accessories", "mountain"]],
    ),
    (
        "which customers from {city} placed more than {n} orders",
        "SELECT customers.first_name, customers.last_name FROM customers"
        " JOIN orders ON orders.customer_id = customers.customer_id WHERE customers.city = '{city}'"
        " GROUP BY customers.customer_id HAVING COUNT(*) > {n}",
        [{"city": c, "n": n} for c, n in [("Lyon", "6"), ("Malmo", "5"), ("Porto", "6")]],
    ),
    (
        "monthly number of orders in {year}",
        "SELECT substr(order_date, 1, 7) AS month, COUNT(*) FROM orders WHERE order_date LIKE '{year}-%'"
        " GROUP BY month ORDER BY month",
        [{"year": y} for y in ["2024", "2025"]],
    ),
]


def build_questions(path: Path) -> None:
    rng = random.Random(11)
    items = []
    for t_index, (question, sql, values) in enumerate(TEMPLATES):
        for v_index, v in enumerate(values):
            items.append(
                {"pattern": t_index, "question": question.format(**v), "sql": sql.format(**v), "k": v_index}
            )
    # First occurrences of patterns early, repeats later: the stream a new project sees.
    items.sort(key=lambda it: (it["k"], rng.random()))
    with path.open("w") as out:
        for i, it in enumerate(items):
            out.write(
                json.dumps(
                    {
                        "id": f"q{i:03d}",
                        "question": it["question"],
                        "sql": it["sql"],
                        "pattern": it["pattern"],
                    }
                )
                + "\n"
            )


if __name__ == "__main__":
    build_database(HERE / "bikeshop.sqlite")
    build_questions(HERE / "questions.jsonl")
    print("built", HERE / "bikeshop.sqlite", HERE / "questions.jsonl")
