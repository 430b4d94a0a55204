from aitrading.service import run
from trading_engine.main import create_app

if __name__ == "__main__":
    run(create_app())
