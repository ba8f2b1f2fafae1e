from jupyter_gpu_worker.agent import main

main()
