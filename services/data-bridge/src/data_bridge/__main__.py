from aitrading.service import run
from data_bridge.main import create_app

if __name__ == "__main__":
    run(create_app())
